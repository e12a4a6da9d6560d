/**
 * The Pandapush browser client as an ES module:
 *
 *   import Pandapush, { Client } from 'https://pandapush.example/client.mjs';
 *
 * `client.js` is a classic script (it must work from a plain <script> tag); importing it
 * here runs it once, as a module, and it leaves its API on `globalThis.Pandapush`, which
 * this module re-exports. One implementation, no build step.
 */
import './client.js';

const Pandapush = globalThis.Pandapush;

export const { Client, Subscription, Publication, PandapushError, VERSION } = Pandapush;
export default Pandapush;
