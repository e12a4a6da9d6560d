'use strict';
// The errors a Client rejects with. A refusal by the server carries its HTTP `status` and the
// server's error body ({code, params, message}, the shape of a Faye error): `code`, `params`
// and `serverMessage`. A failure on the way (refused, reset, timed out) has `status` null.
// `message` names the method and path of the request, never its headers: the key's secret
// travels in Authorization and must not reach a log through an error.

class PandapushError extends Error {
  constructor(serverMessage, { status = null, code = null, params = [], method = null, path = null, retryAfter = null } = {}) {
    const where = method && path ? ` on ${method} ${path}` : '';
    super(status ? `HTTP ${status}${where}: ${serverMessage}` : `${serverMessage}${where}`);
    this.name = new.target.name;
    this.serverMessage = serverMessage;
    this.status = status;
    this.code = code ?? status;
    this.params = params;
    this.method = method;
    this.path = path;
    /** Seconds the server asked to wait (429, 503), or null. */
    this.retryAfter = retryAfter;
  }

  /** The same error, for a request (the client adds where it happened). */
  forRequest(method, path) {
    return new this.constructor(this.serverMessage, {
      status: this.status, code: this.code, params: this.params, method, path, retryAfter: this.retryAfter,
    });
  }
}

/** The credentials were refused (401 or 403). */
class AuthError extends PandapushError {}
/** 401: no credentials the server could read. */
class AuthenticationError extends AuthError {}
/** 403: wrong key, secret or token, or one that does not allow this ("Invalid secret"...). */
class ForbiddenError extends AuthError {}
/** 404: no such application, channel type or endpoint. */
class NotFoundError extends PandapushError {}
/** 400, 413 and other 4xx: the request itself is wrong; sending it again will not help. */
class BadRequestError extends PandapushError {}
/** 429: past the key's publishes per second; `retryAfter` says when to try again. */
class RateLimitedError extends PandapushError {}
/** A 5xx answer. */
class ServerError extends PandapushError {}
/** 502, 503, 504: the server could not do it now; retried. */
class UnavailableError extends ServerError {}
/** No answer came: the connection could not be made, or broke. Retried. */
class NetworkError extends PandapushError {}
/** No answer within the client's timeout. Retried, with the same idempotency key. */
class TimeoutError extends NetworkError {}
/** A webhook request whose signature, key or body is not what pandapush sends. */
class InvalidWebhookError extends PandapushError {}

/** The error class for an HTTP error status. */
function errorForStatus(status) {
  if (status === 401) return AuthenticationError;
  if (status === 403) return ForbiddenError;
  if (status === 404) return NotFoundError;
  if (status === 429) return RateLimitedError;
  if (status === 502 || status === 503 || status === 504) return UnavailableError;
  if (status >= 500) return ServerError;
  if (status >= 400) return BadRequestError;
  return PandapushError;
}

module.exports = {
  PandapushError,
  AuthError,
  AuthenticationError,
  ForbiddenError,
  NotFoundError,
  BadRequestError,
  RateLimitedError,
  ServerError,
  UnavailableError,
  NetworkError,
  TimeoutError,
  InvalidWebhookError,
  errorForStatus,
};
