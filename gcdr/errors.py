"""The user's mistakes: errors whose message is one line saying what is wrong and what to do.

Every such error derives from :class:`UserError`; ``gcdr.locking.run_stage`` prints it as one line (exit code 1)
without a traceback, unless ``--debug`` is on the command line (or GCDR_DEBUG=1), which shows the traceback.
"""


class UserError(Exception):
    """A mistake of the user's (a path, a setting, a missing prerequisite stage); the message is one line."""
