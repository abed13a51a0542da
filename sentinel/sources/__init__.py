"""Sources: where samples come from. Each is thin I/O; the runtime adds retry, queues and metrics."""
