"""Helpers kept at upstream TransferQueue's import paths (transfer_queue.utils.*)."""
