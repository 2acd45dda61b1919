"""The engine as a service: OGC API - Processes over HTTP (``python -m engine serve``).

One process per engine tool, its description generated from the tool's
declaration (``engine.contract.tools``); each job runs the engine as a
subprocess through the same runner the plugin uses
(``engine.contract.runner``), ``--jobs N`` at a time, the rest queued in order.

    processes.py   OGC process descriptions and inputs -> checked tool values
    security.py    bearer tokens, loopback, references confined to the data root
    uploads.py     multipart bodies streamed to disk with a size limit
    store.py       the job table in SQLite (survives restarts)
    jobs.py        the queue, the workers, dismiss, restart recovery, expiry, quota
    app.py         the FastAPI application (endpoints, OGC exceptions)
    main.py        ``serve``'s command line: checks, then uvicorn
"""
