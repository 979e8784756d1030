"""The one base class of every error tropes reports to a user. Library code raises these;
only the command line turns them into 'error: ...' and an exit status."""

from __future__ import annotations


class TropesError(Exception):
    """Something a user can fix; the message says what is wrong and where."""
