"""kopf handlers: each reads, calls a plan, and applies it."""
