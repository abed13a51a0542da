"""``sentinel run --role router|scorer``: Sentinel beyond one machine, on NATS JetStream (DESIGN §10).

::

    writes ─▶ router (receiver, leased pollers) ─publish─▶ JetStream stream, subjects <prefix>.<p>
                                                             │ one durable pull consumer per partition
    scorer i of N (owns partitions rendezvous-hashed to i) ◀─┘
      └─ the normal daemon path (ingest queue → tick → alerts); per partition, a checkpoint
         (its streams' state + the stream sequence it covers) in the object store; acks up to it

Modules: :mod:`.partitions` (hashing), :mod:`.codec` (message bodies), :mod:`.js` (connection
and JetStream objects), :mod:`.router`, :mod:`.lease` (one poller among routers),
:mod:`.consumer` (the scorer's source), :mod:`.state` (partition checkpoints),
:mod:`.ownership` (who owns what, handover), :mod:`.scorer` (the daemon hooks),
:mod:`.models` (published model versions).
"""
