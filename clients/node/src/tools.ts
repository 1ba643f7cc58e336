/**
 * A tool round trip from Node.js: offer a tool, run the call the model asks
 * for, send the result back, print the final answer.
 *
 *     node dist/clients/node/src/tools.js --address 127.0.0.1:50051 --prompt "What is the weather in Lisbon?"
 *     node dist/clients/node/src/tools.js --model claude-sonnet-4-20250514
 *
 * It prints each tool call (`tool call NAME ARGUMENTS (id ID)`), the result
 * it sent (`tool result JSON`), the final answer, and a summary line of each
 * call (`ask ...`, `reply ...`). Against the simulator, end the prompt with
 * `[[tool:get_weather]]` to have the model call the tool.
 *
 * On failure it prints the gRPC status and the gateway's request id to
 * stderr and exits with the status code's number (3 for INVALID_ARGUMENT).
 */
import { parseArgs } from "node:util";

import type { JsonObject } from "@bufbuild/protobuf";

import { FinishReason, Role } from "../../../gen/node/switchyard/v1/gateway_pb.js";
import { GatewayClient, GatewayError, usd } from "./gateway.js";

const { values } = parseArgs({
  options: {
    address: { type: "string", default: "127.0.0.1:50051" },
    prompt: { type: "string", default: "What is the weather in Lisbon?" },
    caller: { type: "string", default: "node-example" },
    model: { type: "string", default: "" }, // empty: the gateway routes the query
  },
});

/** The tool itself: a stand-in for a real weather service. */
function getWeather(args: JsonObject): JsonObject {
  return { city: args.city ?? "unknown", unit: args.unit ?? "celsius", temperature: 21 };
}

async function main(
  address: string,
  prompt: string,
  caller: string,
  model: string,
): Promise<void> {
  const client = new GatewayClient(address, {
    caller,
    apiKey: process.env.SWITCHYARD_API_KEY,
    timeoutMs: 120_000,
  });
  try {
    // [readme:node-tools]
    const weather = {
      name: "get_weather",
      description: "The current weather in a city",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        },
        required: ["city", "unit"],
      },
    };
    const question = { role: Role.USER, content: prompt };
    const first = await client.query({ query: { messages: [question], tools: [weather], model } });
    if (first.finishReason !== FinishReason.TOOL_CALLS) {
      console.log(first.content); // the model answered without the tool
      return;
    }
    // Run each call the model asked for; its result goes back under the call's id.
    const results = first.toolCalls.map((call) => {
      console.log(`tool call ${call.name} ${JSON.stringify(call.arguments)} (id ${call.id})`);
      const content = JSON.stringify(getWeather(call.arguments ?? {}));
      console.log(`tool result ${content}`);
      return { kind: { case: "toolResult" as const, value: { toolCallId: call.id, content } } };
    });
    // The next turn: the question, the answer as it came (reasoning first, then
    // its text and tool calls), then the results, with the same tools.
    const answer = {
      role: Role.ASSISTANT,
      parts: [
        ...first.reasoning,
        ...(first.content ? [{ kind: { case: "text" as const, value: first.content } }] : []),
        ...first.toolCalls.map((call) => ({ kind: { case: "toolCall" as const, value: call } })),
      ],
    };
    const final = await client.query({
      query: {
        messages: [question, answer, { role: Role.TOOL, parts: results }],
        tools: [weather],
        model,
      },
    });
    console.log(final.content);
    // [/readme:node-tools]
    for (const [kind, call] of [["ask", first], ["reply", final]] as const) {
      console.log(
        `${kind} model=${call.model} finish=${FinishReason[call.finishReason]}` +
          ` tokens_in=${call.usage?.inputTokens} tokens_out=${call.usage?.outputTokens}` +
          ` cost_usd=${usd(call.cost)} attempts=${call.attempts.length}`,
      );
    }
  } finally {
    client.close();
  }
}

main(values.address, values.prompt, values.caller, values.model).catch((error: unknown) => {
  if (error instanceof GatewayError) {
    console.error(`error: ${error.message}`);
    process.exit(error.code);
  }
  throw error;
});
