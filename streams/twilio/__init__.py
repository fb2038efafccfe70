"""What happens when Twilio calls us: every request Twilio makes to Switchboard, and the call tool.

One folder for the I/O side; the rules it applies are pure, in :mod:`switchboard.calltool`
(no Kafka, HTTP or clock there). Twilio signs every request with the client's auth token over
``SWITCHBOARD_PUBLIC_URL`` + the exact path and query; each view checks that first and answers
403, changing nothing, when it is wrong (``signature.py``).

The call tool (README: "The call tool")::

    POST /api/call ─► call_views.py ─Reserve─► <prefix>.calls ─► call_agent.py (grant, Open)
      (the client's API key)  └─ Twilio's Calls API (transports/twilio.py) ─► Created / CreationFailed
    Twilio, during the call: POST /twilio/calls/{call id}/{step}

    step         view (call_views.py)          command on <prefix>.calls      TwiML answered
    start        Step(start)                   ─► calls: unstarted → started   the clip, in a gather
    menu         (no state change)                                             menu n, or Redirect
    connect      Step(connect)                 ─► started → connected          Dial the target
    dial-status  TargetStatus(DialCallStatus)  ─► the target's machine         Hangup / sorry
    status       MemberStatus(CallStatus)      ─► the member's machine         empty (503 if not durable)

1. ``call_views.py`` forwards a request to the worker owning the call's partition (with its
   body), waits for the call's record, checks the signature, produces the step's command
   (:mod:`switchboard.calltool.commands`) and answers TwiML (:mod:`switchboard.calltool.twiml`,
   the steps and menus). ``GET /v1/calls/{id}`` reads the record
   (:func:`switchboard.calltool.calls.combined_state`).
2. ``call_agent.py``, the calls agent (Faust name ``switchboard.calls``), the only writer of the
   ``calls`` and ``call_lines`` tables, applies each command
   (:func:`switchboard.calltool.commands.apply`, over the three state machines of
   :mod:`switchboard.calltool.calls`), publishes one status event per change on
   ``<prefix>.status`` (session id = call id, channel ``voice``) and keeps the silence timer
   (``unknown`` when Twilio goes quiet).
3. The campaigns (what a call says, its targets, manual targets' checksums) are the client's
   configuration, parsed by :mod:`switchboard.calltool.campaigns`.

Messages Twilio sent for us (``message_views.py``)::

    POST /twilio/messages/status?d=&a=&c=&p=  MessageStatus (or a voice broadcast's CallStatus)
        ─► a Report on <prefix>.reports ─► the report agent (streams/reports.py) ─► status event
    POST /twilio/messages/inbound             STOP / START / HELP (switchboard/optout.py)
        ─► the opt-outs table (<prefix>.optouts) ─► TwiML reply

The callback URL of a message is built where it is sent (``streams/dispatch.py``). Outbound,
Switchboard calls Twilio through adapters behind the transport interface, which stay in
:mod:`transports`: ``transports/twilio.py`` (SMS, WhatsApp, voice broadcasts, the call tool's
Calls API) and ``transports/twilio_lookup.py`` (line types). The OpenAPI text of these
endpoints is ``streams/web/openapi_twilio.py`` (the document is assembled in ``streams/web``,
which this folder builds on and which does not import it back).

Registered by the composition root (``streams/compose.py``); ``make lint`` holds the folder's
layers: the views over the agent and the signature check, over the pure rules.
"""
