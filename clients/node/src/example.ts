/**
 * Calls Switchyard from Node.js: one Query, then one StreamQuery printed as
 * it arrives, each followed by a summary line.
 *
 *     node dist/clients/node/src/example.js --address 127.0.0.1:50051 --prompt "Compare quicksort and mergesort"
 *     SWITCHYARD_API_KEY=sy-... node dist/clients/node/src/example.js --address gateway:50051 --tls-ca ca.pem
 *
 * With --tls-ca it connects over TLS, trusting that CA; SWITCHYARD_API_KEY,
 * when set, is sent as `authorization: Bearer <key>` (an environment
 * variable, so that the key never shows in `ps`).
 *
 * On failure it prints the gRPC status and the gateway's request id to
 * stderr and exits with the status code's number (3 for INVALID_ARGUMENT).
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";

import { GatewayClient, GatewayError, usd } from "./gateway.js";

const { values } = parseArgs({
  options: {
    address: { type: "string", default: "127.0.0.1:50051" },
    prompt: { type: "string", default: "Compare quicksort and mergesort" },
    caller: { type: "string", default: "node-example" },
    "tls-ca": { type: "string" },
  },
});

async function main(
  address: string,
  prompt: string,
  caller: string,
  tlsCa: string | undefined,
): Promise<void> {
  // [readme:node]
  const client = new GatewayClient(address, {
    caller,
    apiKey: process.env.SWITCHYARD_API_KEY, // the key `switchyard keys create` printed
    // TLS, trusting the CA that signed the gateway's certificate; plaintext without it
    credentials: tlsCa ? grpc.credentials.createSsl(readFileSync(tlsCa)) : undefined,
    timeoutMs: 120_000,
  });
  try {
    const answer = await client.query({ query: { prompt } });
    console.log(answer.content);
    console.log(
      `query model=${answer.model} tokens_in=${answer.usage?.inputTokens}` +
        ` tokens_out=${answer.usage?.outputTokens} cost_usd=${usd(answer.cost)}` +
        ` attempts=${answer.attempts.length}`,
    );

    let model = "";
    for await (const message of client.streamQuery({ query: { prompt } })) {
      const event = message.event;
      if (event.case === "start") model = event.value.model;
      if (event.case === "delta") process.stdout.write(event.value.text); // as it arrives
      if (event.case === "end") {
        console.log(
          `\nstream model=${model} tokens_in=${event.value.usage?.inputTokens}` +
            ` tokens_out=${event.value.usage?.outputTokens} cost_usd=${usd(event.value.cost)}` +
            ` attempts=${event.value.attempts.length}`,
        );
      }
    }
  } finally {
    client.close();
  }
  // [/readme:node]
}

main(values.address, values.prompt, values.caller, values["tls-ca"]).catch((error: unknown) => {
  if (error instanceof GatewayError) {
    console.error(`error: ${error.message}`);
    process.exit(error.code);
  }
  throw error;
});
