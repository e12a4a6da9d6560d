#!/usr/bin/env node
// The real CometD JavaScript client (npm `cometd`, in Node through `cometd-nodejs-client`),
// optionally with its AckExtension, subscribed to one channel; prints what it observes as
// JSON lines on stdout:
//
//   node cometd-client.mjs <endpoint> <channel> [--transport=websocket|long-polling] [--ack]
//                          [--backoff=ms]
//
//   {"event":"sent"|"received","message":{...}}   every Bayeux message, as the client sees it
//   {"event":"handshake","successful":true,"clientId":"..."}
//   {"event":"subscribed","successful":true}
//   {"event":"message","data":...}               each message the subscription callback got
//
// Only the given transport is registered (CometD falls back from websocket to long-polling
// otherwise). A line "quit" on stdin disconnects and exits.
import readline from "node:readline";
import {adapt} from "cometd-nodejs-client";
import {AckExtension, CometD} from "cometd";

const started = Date.now();

function report(event) {
    event.t = Date.now() - started;
    process.stdout.write(JSON.stringify(event) + "\n");
}

const positional = [];
const flags = {};
for (const arg of process.argv.slice(2)) {
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (match) flags[match[1]] = match[2] === undefined ? true : match[2];
    else positional.push(arg);
}
if (positional.length !== 2) {
    process.stderr.write("usage: cometd-client.mjs <endpoint> <channel> [--transport=...] [--ack]\n");
    process.exit(2);
}
const [url, channel] = positional;
const transport = flags.transport || "websocket";

adapt();
const cometd = new CometD();
for (const type of cometd.getTransportTypes()) {
    if (type !== transport) cometd.unregisterTransport(type);
}
// --backoff: the pause before connecting again after a failure, 1 s by default, can be
// longer than a short --client-expiry.
cometd.configure({
    url,
    logLevel: "warn",
    useWorkerScheduler: false,
    maxNetworkDelay: 5000,
    backoffIncrement: Number(flags.backoff || 1000),
});
// Registered first: sees every message the others send and after they handled replies.
cometd.registerExtension("log", {
    outgoing(message) {
        report({event: "sent", message: structuredClone(message)});
        return message;
    },
    incoming(message) {
        report({event: "received", message});
        return message;
    },
});
if (flags.ack) cometd.registerExtension("ack", new AckExtension());

cometd.handshake(reply => {
    report({event: "handshake", successful: reply.successful, clientId: reply.clientId});
    if (!reply.successful) return;
    cometd.subscribe(channel, message => report({event: "message", data: message.data}),
        subscribed => report({event: "subscribed", successful: subscribed.successful}));
});

readline.createInterface({input: process.stdin}).on("line", line => {
    if (line.trim() === "quit") {
        cometd.disconnect(() => process.exit(0));
        setTimeout(() => process.exit(0), 2000);
    }
});
