"""The technician's commands that need more than a few lines: each module holds one command,
its argument parser (``add_parser``) and its entry point (``run``), wired in agent/cli.py.

    provision       keys, CSR, certificate, platform profile and patient, then proof
    doctor          a checklist with the fix for each failure; exit code = failures
    status          what the pipeline did, as a table or JSON, live with --watch
    factory_reset   crypto-erase and everything of the patient's, refused while running
"""
