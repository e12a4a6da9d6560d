"""Resuming subscriptions: what ``/meta/subscribe`` may ask in ``ext``, and what its reply says.

A subscribe may carry ``ext.resume``, the last position its client saw: for a concrete
subscription ``{"offset": 17, "epoch": "Ab3x9Q_z"}``, or for any subscription a map of
concrete channels it covers to their positions (a wildcard subscriber resumes each
channel it saw); and ``ext.latest: true`` (a cache channel: the latest message at once).
The engine sends what was missed before anything live (:meth:`IEngine.recover`); the
reply's ``ext`` says whether everything was (``recovered``, ``unrecovered``) and each
concrete channel's current position (``positions``), from which a client that saw
nothing yet can resume later. See docs/bayeux.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pandapush.bayeux import channel as channels
from pandapush.bayeux.errors import BayeuxError
from pandapush.bayeux.message import Message
from pandapush.interfaces import MAX_EPOCH_LENGTH, Position, Recovery

__all__ = ["MAX_EPOCH_LENGTH", "ResumeRequest", "answer", "resumeRequest"]


# channels.isPattern, in one str.endswith per channel instead of a call and two.
_WILDCARDS = ("/*", "/**")


@dataclass
class ResumeRequest:
    """What a subscribe asked of history: channel -> position (None: none, just report it); latest."""

    wanted: dict[str, Position | None] = field(default_factory=dict)
    latest: list[str] = field(default_factory=list)
    #: Whether the client asked to resume or for the latest message (the reply says how it went).
    asked: bool = False


def _position(value: Any, channel: str) -> Position | BayeuxError:
    if not isinstance(value, dict):
        return BayeuxError(400, [channel], "Invalid position: an object with offset and epoch")
    offset, epoch = value.get("offset"), value.get("epoch")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return BayeuxError(400, [channel], "Invalid position: offset must be an integer >= 0")
    if not isinstance(epoch, str) or not epoch or len(epoch) > MAX_EPOCH_LENGTH:
        return BayeuxError(400, [channel], "Invalid position: epoch must be a short string")
    return Position(offset, epoch)


def resumeRequest(message: Message, requested: list[str], maxChannels: int) -> ResumeRequest | BayeuxError:
    """
    The resume a subscribe to ``requested`` asks for, or the error refusing it: a position
    of the wrong type, a channel the subscription does not cover, more than
    ``maxChannels`` channels. Every concrete channel subscribed is in ``wanted`` (its
    position is reported), resumed or not.
    """
    concrete = [c for c in requested if not c.endswith(_WILDCARDS)]
    # Fields given, not left to the dataclass's default factories: a call each.
    request = ResumeRequest(dict.fromkeys(concrete), [])
    ext = message.get("ext")
    if not isinstance(ext, dict) or ("resume" not in ext and "latest" not in ext):
        # Nearly every subscribe (each storm client's) asks nothing of history.
        return request
    resume = ext.get("resume")
    latest = ext.get("latest")
    if latest is not None:
        if not isinstance(latest, bool):
            return BayeuxError(400, [requested[0]], "Invalid latest: true or false")
        if latest:
            request.latest = concrete
            request.asked = bool(concrete)
    if resume is None:
        return request
    first = requested[0]
    if isinstance(resume, dict) and "offset" in resume:
        # The shorthand, for one concrete channel.
        if len(concrete) != 1 or len(requested) != 1:
            return BayeuxError(400, [first], "Invalid resume: name the channel of each position")
        resume = {concrete[0]: resume}
    if not isinstance(resume, dict):
        return BayeuxError(400, [first], "Invalid resume: an object of positions")
    if len(resume) > maxChannels:
        return BayeuxError(400, [first], f"Invalid resume: more than {maxChannels} channels")
    for channel, value in resume.items():
        covered = channels.isValidName(channel) and any(
            s == channel or (channels.isPattern(s) and channels.matches(s, channel)) for s in requested
        )
        if not covered:
            return BayeuxError(400, [channel], "Invalid resume: channel not in this subscription")
        position = _position(value, channel)
        if isinstance(position, BayeuxError):
            return position
        request.wanted[channel] = position
    request.asked = True
    return request


def answer(reply: Message, request: ResumeRequest, outcomes: dict[str, Recovery]) -> BayeuxError | None:
    """Say in the reply's ``ext`` how the resume went; the error if a position is from the future."""
    for channel, outcome in outcomes.items():
        if outcome.missed == "future":
            return BayeuxError(400, [channel], "Invalid position: beyond the channel's last message")
    positions = {
        channel: {"offset": outcome.position.offset, "epoch": outcome.position.epoch}
        for channel, outcome in outcomes.items()
        if outcome.position is not None
    }
    ext: dict[str, Any] = {}
    if request.asked:
        unrecovered = {
            channel: outcome.missed for channel, outcome in outcomes.items() if outcome.missed is not None
        }
        ext["recovered"] = not unrecovered
        if unrecovered:
            ext["unrecovered"] = unrecovered
    if positions:
        ext["positions"] = positions
    if ext:
        existing = reply.get("ext")
        reply["ext"] = {**existing, **ext} if isinstance(existing, dict) else ext
    return None
