// The ES module face of the package: the very objects of index.cjs, so an error thrown by a
// Client made through `require` is `instanceof` the classes imported here, and the other way round.
import pandapush from './index.cjs';

export const {
  Client,
  VERSION,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  mintToken,
  signHS256,
  SIGNATURE_HEADER,
  KEY_HEADER,
  signWebhook,
  verifyWebhook,
  parseWebhook,
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
} = pandapush;

export default pandapush;
