"""The durable ledger: a local journal, then SQL (SQLite by default, PostgreSQL shared).

    request path   AccountingStage -> SqlLedger.record: one write(2) to the journal
    writer task    every flush interval or batch: rotate the journal, write the closed
                   segment in one transaction, then delete the segment
    readers        GetUsage, export, budget seeding: the database plus what this process
                   journalled and has not written yet

See ``journal.py`` for what survives which failure, ``database.py`` for the
two databases, ``migrations/`` for the schema and ``ledger.py`` for the whole.
"""
