"""Upstream's import path for the controller's address type:
``from transfer_queue.utils.zmq_utils import ZMQServerInfo, process_zmq_server_info``.
The classes live in transfer_queue.controller; this module only re-exports them."""

from ..controller import ZMQServerInfo, process_zmq_server_info

__all__ = ["ZMQServerInfo", "process_zmq_server_info"]
