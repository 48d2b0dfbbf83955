"""Tasks and the durable task queue: create, assign or claim by priority, complete, fail with requeue and a
dead-letter list, every attempt kept in the task's history (see ``queue.TaskQueue``)."""

from godel.store.tasks import TaskQuery
from godel.tasks.queue import MAX_PRIORITY, MIN_PRIORITY, TaskQueue
from godel.tasks.transitions import TaskTrigger

__all__ = ["MAX_PRIORITY", "MIN_PRIORITY", "TaskQuery", "TaskQueue", "TaskTrigger"]
