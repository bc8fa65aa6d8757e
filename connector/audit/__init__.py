"""The tamper-evident audit trail (issue 16): one hash-chained record per handled message.

records.py the record and its canonical form, chain.py linking and verifying, store.py the SQL both stores
share (sqlite_store.py the default file, postgres_store.py for replicas; backend.py picks one), writer.py the
non-blocking writer with its spill file, cli.py `python -m connector.audit {verify,export,purge}`.
"""
