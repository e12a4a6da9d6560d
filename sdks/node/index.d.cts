/**
 * Types of the pandapush Node package (`require('pandapush')`; `index.d.mts` re-exports them
 * for `import`).
 */

export declare const VERSION: string;
export declare const MAX_IDEMPOTENCY_KEY_LENGTH: number;
export declare const SIGNATURE_HEADER: 'X-Pandapush-Signature';
export declare const KEY_HEADER: 'X-Pandapush-Key';

/** Presence data: who the member is. `id` is required; keep the rest small. */
export interface Presence {
  id: string | number;
  [field: string]: unknown;
}

export interface ClientOptions {
  /** The server, e.g. `https://push.example.com` (a path prefix is kept). */
  url: string;
  keyId: string;
  secret: string;
  /** The application for calls that name no channel. */
  appId?: string | null;
  /** Milliseconds an attempt may take, answer included. Default 10000. */
  timeout?: number;
  /** Times a call is sent again after no answer or a 502/503/504. Default 2; 0: never. */
  maxRetries?: number;
  /** Milliseconds before the first retry, doubled (with jitter) each time. Default 500. */
  retryDelay?: number;
  /** Ceiling of that back-off, and of the Retry-After honoured, in milliseconds. Default 10000. */
  maxRetryDelay?: number;
  /** Hears of retries (e.g. `console`). */
  logger?: { info(message: string): void } | null;
}

export interface PublishOptions {
  /** At most 200 printable ASCII characters; by default a random one when retries are on. */
  idempotencyKey?: string;
}

export interface TokenOptions {
  pub?: boolean;
  sub?: boolean;
  presence?: Presence;
  /** Seconds from now; without it the token never expires. */
  expiresIn?: number;
  /** The user the token is for: `terminateUserConnections(user)` ends what it subscribed. */
  user?: string | number;
}

export interface TokenClaims extends TokenOptions {
  channel: string;
}

export type BatchMessage = { channel: string; data: unknown } | [channel: string, data: unknown];

export interface ChannelInfo {
  occupied?: boolean;
  subscription_count?: number;
  user_count?: number;
  [field: string]: unknown;
}

export interface ChannelsAnswer {
  channels: Record<string, ChannelInfo>;
}

export interface MembersAnswer {
  members: Record<string, Presence>;
}

export interface HistoryMessage {
  offset: number;
  data: unknown;
  [field: string]: unknown;
}

export interface HistoryAnswer {
  epoch: string;
  offset: number;
  messages: HistoryMessage[];
}

export interface WebhookEvent {
  id: string;
  name: 'channel_occupied' | 'channel_vacated' | 'member_added' | 'member_removed' | 'client_event' | string;
  channel: string;
  user_id?: string;
  data?: unknown;
}

export interface WebhookPayload {
  time_ms: number;
  events: WebhookEvent[];
}

export type Headers =
  | Record<string, string | string[] | undefined>
  | { get(name: string): string | null | undefined }
  | Array<[string, string]>;

export declare class Client {
  constructor(options: ClientOptions);
  readonly url: string;
  readonly keyId: string;
  readonly appId: string | null;
  readonly timeout: number;
  readonly maxRetries: number;
  readonly retryDelay: number;
  readonly maxRetryDelay: number;

  publish(channel: string, data: unknown, options?: PublishOptions): Promise<void>;
  publishMany(channels: string[], data: unknown, options?: PublishOptions): Promise<unknown>;
  publishBatch(messages: Iterable<BatchMessage>, options?: PublishOptions): Promise<unknown>;
  token(claims: TokenClaims): Promise<string>;
  token(channel: string, options?: TokenOptions): Promise<string>;
  verifyWebhook(body: string | Uint8Array, signature: string | null | undefined, options?: { keyId?: string | null }): Promise<boolean>;
  parseWebhook(body: string | Uint8Array, headers: Headers): Promise<WebhookPayload>;
  channel(name: string): Promise<ChannelInfo>;
  channels(options?: { prefix?: string; appId?: string }): Promise<ChannelsAnswer>;
  members(channel: string): Promise<MembersAnswer>;
  history(channel: string, options?: { since?: number; limit?: number }): Promise<HistoryAnswer>;
  terminateUserConnections(userId: string | number, options?: { appId?: string }): Promise<unknown>;
  toJSON(): { url: string; keyId: string; appId: string | null };
}

/** The synchronous form of `Client#token`. */
export declare function mintToken(options: TokenClaims & { keyId: string; secret: string; now?: number }): string;
export declare function signHS256(claims: Record<string, unknown>, secret: string): string;
export declare function signWebhook(secret: string, body: string | Uint8Array): string;
export declare function verifyWebhook(options: {
  keyId: string;
  secret: string;
  body: string | Uint8Array;
  signature: string | null | undefined;
  signedBy?: string | null;
}): boolean;
export declare function parseWebhook(options: { keyId: string; secret: string; body: string | Uint8Array; headers: Headers }): WebhookPayload;

export interface ErrorDetails {
  status?: number | null;
  code?: number | null;
  params?: unknown[];
  method?: string | null;
  path?: string | null;
  retryAfter?: number | null;
}

/** Every rejection. `message` says everything in one line; the server's own text is `serverMessage`. */
export declare class PandapushError extends Error {
  constructor(serverMessage: string, details?: ErrorDetails);
  /** HTTP status, or null when no answer came. */
  readonly status: number | null;
  /** The server's error code (the HTTP status today). */
  readonly code: number | null;
  readonly params: unknown[];
  readonly serverMessage: string;
  readonly method: string | null;
  readonly path: string | null;
  /** Seconds the server asked to wait (429, 503), or null. */
  readonly retryAfter: number | null;
}
export declare class AuthError extends PandapushError {}
export declare class AuthenticationError extends AuthError {}
export declare class ForbiddenError extends AuthError {}
export declare class NotFoundError extends PandapushError {}
export declare class BadRequestError extends PandapushError {}
export declare class RateLimitedError extends PandapushError {}
export declare class ServerError extends PandapushError {}
export declare class UnavailableError extends ServerError {}
export declare class NetworkError extends PandapushError {}
export declare class TimeoutError extends NetworkError {}
export declare class InvalidWebhookError extends PandapushError {}
