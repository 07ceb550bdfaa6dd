"""The end-to-end demo job: cache -> train -> evaluate -> one table (`python -m demo.run`)."""
