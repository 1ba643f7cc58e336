/**
 * A typed Switchyard client for Node.js: @grpc/grpc-js carries the calls,
 * and the messages are the ones protoc-gen-es generated into gen/node.
 *
 * protoc-gen-es describes the service but leaves the transport open; this
 * module is the small bridge to grpc-js (serialize with `toBinary`, parse
 * with `fromBinary`, one path per RPC), plus the defaults every caller
 * wants: a deadline, keepalive, caller and API-key metadata, and errors that
 * keep the gRPC status and the gateway's request id.
 *
 *     const client = new GatewayClient("127.0.0.1:50051", { caller: "search" });
 *     const answer = await client.query({ query: { prompt: "Hello" } });
 *     for await (const message of client.streamQuery({ query: { prompt: "Hello" } })) { ... }
 *     client.close();
 */
import * as grpc from "@grpc/grpc-js";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";

import { GatewayService } from "../../../gen/node/switchyard/v1/gateway_pb.js";

/** The metadata key that names the calling service. */
export const CALLER_HEADER = "x-switchyard-caller";
/** The trailing metadata key that carries the gateway's id of a call. */
export const REQUEST_ID_HEADER = "x-switchyard-request-id";

/** How a client connects and what it sends with every call. */
export interface ClientOptions {
  /** Channel credentials; plaintext when omitted (use grpc.credentials.createSsl() for TLS). */
  credentials?: grpc.ChannelCredentials;
  /** Sent as x-switchyard-caller; the gateway counts usage per caller. */
  caller?: string;
  /** Sent as `authorization: Bearer <key>`; never logged by this client. */
  apiKey?: string;
  /** Default deadline of each call in milliseconds (120 s when omitted). */
  timeoutMs?: number;
}

/** Per-call settings. */
export interface CallOptions {
  /** Deadline of this call in milliseconds; overrides the client's default. */
  timeoutMs?: number;
  /** Extra metadata for this call. */
  metadata?: Record<string, string>;
}

/** A failed call: the gRPC status, its message and the gateway's request id. */
export class GatewayError extends Error {
  readonly code: grpc.status;
  readonly details: string;
  readonly requestId: string | undefined;

  constructor(error: grpc.ServiceError) {
    const requestId = error.metadata?.get(REQUEST_ID_HEADER)[0]?.toString();
    const suffix = requestId ? ` (request id ${requestId})` : "";
    super(`${grpc.status[error.code]}: ${error.details}${suffix}`);
    this.name = "GatewayError";
    this.code = error.code;
    this.details = error.details;
    this.requestId = requestId;
  }
}

const DEFAULT_TIMEOUT_MS = 120_000;
const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Ping idle connections so a dead peer is noticed before the next call
  // (the gateway accepts pings every 10 s or more).
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
};

/** Calls switchyard.v1.GatewayService with typed requests and answers. */
export class GatewayClient {
  readonly #client: grpc.Client;
  readonly #options: ClientOptions;

  constructor(address: string, options: ClientOptions = {}) {
    this.#options = options;
    this.#client = new grpc.Client(
      address,
      options.credentials ?? grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    );
  }

  /** Where the query would go and what it could cost; no model is called. */
  route(request: MessageInitShape<typeof GatewayService.method.route.input>, options?: CallOptions) {
    return this.#unary(GatewayService.method.route, request, options);
  }

  /** One complete answer. */
  query(request: MessageInitShape<typeof GatewayService.method.query.input>, options?: CallOptions) {
    return this.#unary(GatewayService.method.query, request, options);
  }

  /** The answer as it is produced: start, deltas, then end. */
  streamQuery(
    request: MessageInitShape<typeof GatewayService.method.streamQuery.input>,
    options?: CallOptions,
  ) {
    return this.#serverStream(GatewayService.method.streamQuery, request, options);
  }

  /** The caller's usage over a window. */
  getUsage(
    request: MessageInitShape<typeof GatewayService.method.getUsage.input>,
    options?: CallOptions,
  ) {
    return this.#unary(GatewayService.method.getUsage, request, options);
  }

  /** Close the channel; calls in flight are cancelled. */
  close(): void {
    this.#client.close();
  }

  #unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    request: MessageInitShape<I>,
    options?: CallOptions,
  ): Promise<MessageShape<O>> {
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        path(method),
        (message: MessageShape<I>) => Buffer.from(toBinary(method.input, message)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        create(method.input, request),
        this.#metadata(options),
        this.#callOptions(options),
        (error, response) => {
          if (error) reject(new GatewayError(error));
          else if (response === undefined) reject(new Error(`${method.name}: empty response`));
          else resolve(response);
        },
      );
    });
  }

  async *#serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    request: MessageInitShape<I>,
    options?: CallOptions,
  ): AsyncGenerator<MessageShape<O>> {
    const call = this.#client.makeServerStreamRequest(
      path(method),
      (message: MessageShape<I>) => Buffer.from(toBinary(method.input, message)),
      (bytes: Buffer) => fromBinary(method.output, bytes),
      create(method.input, request),
      this.#metadata(options),
      this.#callOptions(options),
    );
    try {
      for await (const message of call) {
        yield message as MessageShape<O>;
      }
    } catch (error) {
      throw isServiceError(error) ? new GatewayError(error) : error;
    } finally {
      call.cancel(); // a no-op after a clean end; stops the model when the caller breaks early
    }
  }

  #metadata(options?: CallOptions): grpc.Metadata {
    const metadata = new grpc.Metadata();
    if (this.#options.caller) metadata.set(CALLER_HEADER, this.#options.caller);
    if (this.#options.apiKey) metadata.set("authorization", `Bearer ${this.#options.apiKey}`);
    for (const [key, value] of Object.entries(options?.metadata ?? {})) metadata.set(key, value);
    return metadata;
  }

  #callOptions(options?: CallOptions): grpc.CallOptions {
    const timeout = options?.timeoutMs ?? this.#options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return { deadline: Date.now() + timeout };
  }
}

/** google.type.Money as exact dollars, for example "0.000075000". */
export function usd(money: { units: bigint; nanos: number } | undefined): string {
  if (money === undefined) return "0.000000000";
  const total = money.units * 1_000_000_000n + BigInt(money.nanos);
  const sign = total < 0n ? "-" : "";
  const magnitude = total < 0n ? -total : total;
  const units = magnitude / 1_000_000_000n;
  const nanos = (magnitude % 1_000_000_000n).toString().padStart(9, "0");
  return `${sign}${units}.${nanos}`;
}

function path(method: { name: string; parent: { typeName: string } }): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && "code" in error && "details" in error;
}
