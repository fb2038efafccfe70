"""Tests of the call tool's pure rules (switchboard/calltool/)."""
