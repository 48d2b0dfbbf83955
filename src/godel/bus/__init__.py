"""Event fan-out. The store is the log (it assigns sequences and keeps every event); the bus only delivers
committed events to live subscribers and stitches replay-from-store onto live delivery."""

from godel.bus.memory import MemoryBus, MemorySubscription

__all__ = ["MemoryBus", "MemorySubscription"]
