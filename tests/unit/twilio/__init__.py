"""Tests of what happens when Twilio calls us (streams/twilio/) that need no broker."""
