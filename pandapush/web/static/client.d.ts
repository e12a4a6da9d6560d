/**
 * Type declarations for the Pandapush browser client (`/client.js`, `/client.mjs`).
 *
 * Classic script: `window.Pandapush`. ES module: `import Pandapush, { Client } from '/client.mjs'`.
 */

declare namespace Pandapush {
  type State = 'UNCONNECTED' | 'CONNECTING' | 'CONNECTED' | 'DISCONNECTED';
  type TransportType = 'websocket' | 'long-polling' | 'cross-origin-long-polling';

  /** A token, or a function giving a fresh one (called on every (re)subscribe). */
  type TokenSource = string | (() => string | Promise<string>);

  /** A Bayeux message as it travels (extensions see and may change these). */
  interface Message {
    channel: string;
    id?: string;
    clientId?: string;
    data?: unknown;
    successful?: boolean;
    error?: string;
    ext?: Record<string, unknown>;
    advice?: { reconnect?: 'retry' | 'handshake' | 'none'; interval?: number; timeout?: number };
    [field: string]: unknown;
  }

  interface ClientOptions {
    /** Seconds a request may take (a connect gets the server's hold time on top). Default 60. */
    timeout?: number;
    /** Seconds before the first retry after a network failure; doubles each time. Default 1. */
    retry?: number;
    /** Ceiling of that backoff, in seconds. Default 30. */
    maxRetry?: number;
    /** Seconds to wait for a websocket to open before falling back to long-polling. Default 5. */
    websocketTimeout?: number;
    /** Transports never to use. */
    disable?: TransportType[];
    /** Headers for long-polling requests. */
    headers?: Record<string, string>;
    /** Tell the server when the page goes away (default true). */
    autodisconnect?: boolean;
  }

  /** Faye-style extension: pass the message on with `callback(message)`, or `callback(null)` to drop it. */
  interface Extension {
    incoming?(message: Message, callback: (message: Message | null) => void): void;
    outgoing?(message: Message, callback: (message: Message | null) => void): void;
    added?(client: Client): void;
    removed?(client: Client): void;
  }

  /** `{code, params, message}`; `code` is 0 when no answer came from the server (network, timeout). */
  class PandapushError extends Error {
    code: number;
    params: string[];
    /** The channel concerned, for subscribe and publish refusals. */
    channel?: string;
    /** True when the failure was the network's, not a server refusal. */
    network?: boolean;
    static parse(error: string): PandapushError;
  }

  /** Presence messages: the member list on subscribe, then joins and leaves. */
  interface PresenceMessage {
    subscribe?: Record<string, { id: string; [field: string]: unknown }>;
    unsubscribe?: Record<string, null>;
  }

  interface Thenable<T> extends PromiseLike<T> {
    catch<R = never>(onRejected?: (error: PandapushError) => R | PromiseLike<R>): Promise<T | R>;
    finally(onFinally?: () => void): Promise<T>;
    /** Faye's Deferrable API. */
    callback(fn: (value: T) => void, context?: unknown): this;
    errback(fn: (error: PandapushError) => void, context?: unknown): this;
  }

  interface Subscription extends Thenable<void> {
    withChannel(fn: (channel: string, message: any) => void, context?: unknown): this;
    /**
     * Also receive the channel's latest message at once, from the server's history (a cache
     * channel), when this subscription is the channel's first. Call it right after `subscribe()`.
     */
    latest(): this;
    cancel(): void;
    unsubscribe(): void;
  }

  interface Publication extends Thenable<void> {}

  type Callback = (message: any) => void;

  class Client {
    constructor(url: string, options?: ClientOptions);
    getClientId(): string | null;
    getState(): State;
    getTransport(): TransportType | null;
    connect(callback?: () => void, context?: unknown): Promise<void>;
    subscribe(channel: string, callback?: Callback, context?: unknown): Subscription;
    subscribeTo(channel: string, token: TokenSource, callback?: Callback, context?: unknown): Subscription;
    unsubscribe(channel: string, callback?: Callback | Subscription): Promise<void>;
    publish(channel: string, data: unknown, options?: { deadline?: number; ext?: Record<string, unknown> }): Publication;
    publishTo(channel: string, token: TokenSource, data: unknown, options?: { deadline?: number }): Publication;
    addExtension(extension: Extension): this;
    removeExtension(extension: Extension): this;
    disable(transport: TransportType | string): this;
    setHeader(name: string, value: string): this;
    disconnect(): Promise<void>;
    bind(event: 'transport:up' | 'transport:down', listener: () => void, context?: unknown): this;
    bind(event: 'subscription:refused', listener: (channel: string, error: PandapushError) => void, context?: unknown): this;
    /** The server ended a subscription when its token expired; a token function resubscribes at once. */
    bind(event: 'subscription:expired', listener: (channel: string, error: PandapushError) => void, context?: unknown): this;
    bind(event: 'handshake:error', listener: (error: PandapushError) => void, context?: unknown): this;
    /**
     * A subscription resumed (after a reconnect, a new session, a server restart, another
     * node) but the server could not send everything it missed: `reasons` maps each channel
     * to why (`'epoch changed'`, `'position too old'`, `'no history'`, `'unavailable'`,
     * `'missing messages did not come'` after a gap in the offsets, or the server's refusal of
     * the position). Messages from then on arrive as usual.
     */
    bind(
      event: 'subscription:unrecovered',
      listener: (channel: string, reasons: Record<string, string>) => void,
      context?: unknown,
    ): this;
    unbind(event: string, listener?: (...args: any[]) => void, context?: unknown): this;
    on: Client['bind'];
    off: Client['unbind'];
  }

  const VERSION: string;
  const UNCONNECTED: 'UNCONNECTED';
  const CONNECTING: 'CONNECTING';
  const CONNECTED: 'CONNECTED';
  const DISCONNECTED: 'DISCONNECTED';
}

declare global {
  interface Window {
    Pandapush: typeof Pandapush;
  }
}

export = Pandapush;
export as namespace Pandapush;
