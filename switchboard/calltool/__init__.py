"""The call tool's rules (README: "The call tool"). Pure: no Kafka, HTTP or clock.

What happens when Twilio calls us is walked through in :mod:`streams.twilio` (the views, the
calls agent and the signature check that wire these rules to Kafka and HTTP). The rules, from
the outside in:

* ``campaigns.py``: a client's campaigns (what a call says, its targets, the secret of manual
  targets) and the body of ``POST /api/call`` read against them;
* ``commands.py``: the commands on ``<prefix>.calls`` (Reserve, Open, Step, MemberStatus, ...),
  what each does to a call's record (``apply``) and the status event it publishes;
* ``calls.py``: a call's three state machines (the call tool's status, the member's
  ``CallStatus``, the target's ``DialCallStatus``), the limit per member and campaign, the
  checksum of a manual target and ``GET /v1/calls/{id}``'s answer;
* ``twiml.py``: the TwiML of each step (start, menu, connect, dial-status) and the URLs Twilio
  is given.

``make lint`` holds the order: campaigns and commands build on calls and twiml, never the
other way round.
"""
