"""Pure definitions shared by the SDK, the runtime and the engine.

Nothing here opens a socket, a thread or a database connection: every side of the system may
import it, including code that runs before a fork.
"""
