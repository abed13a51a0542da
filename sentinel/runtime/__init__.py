"""Runtime: the parts that run the engine and the one place that wires sources to sinks.

Where a sample goes, one noun per file::

    ingest.py        the bounded ingest queue every source emits into (overflow policy)
    tick.py          one scoring step on the engine thread, and the fan-out of its output
    engine_thread.py the one thread that owns the engine
    engine.py        samples in, scores and alert transitions out (no I/O)
    views.py         what the engine shows the outside (read-only values)
    scheduler.py     due -> train -> apply (trainer.py: the worker process)
    checkpointer.py  resume at start, snapshot + atomic write
    warmup.py        history from the sources
    status.py        what the HTTP server shows
    reload.py        one reloader per config section
    shard.py         --shard I/N
    factory.py       sources and write-backs from config
    daemon.py        builds the parts, starts them, stops them in order
"""
