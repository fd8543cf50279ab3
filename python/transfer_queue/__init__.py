"""TransferQueue: a C++ data plane for RL post-training, with the seed's Python API.

    from tensordict import TensorDict
    from transfer_queue import TransferQueueClient, TransferQueueController, process_zmq_server_info

put takes a tensordict.TensorDict (or a dict of tensors, arrays and lists);
get_data returns one.
"""

from _tqds import (  # noqa: F401  (re-exported exception types)
    AlreadyExistsError,
    BatchMeta,
    CancelledError,
    DTypeError,
    InternalError,
    InvalidArgumentError,
    IOError_,
    NotFoundError,
    OutOfSpaceError,
    TimeoutError_,
    TQDSError,
    UnavailableError,
)

from .client import TransferQueueClient  # noqa: F401
from .controller import (  # noqa: F401
    TransferQueueController,
    TransferQueueControllerHandle,
    ZMQServerInfo,
    process_zmq_server_info,
)

BatchMeta.__module__ = "transfer_queue"

__all__ = [
    "BatchMeta",
    "TransferQueueClient",
    "TransferQueueController",
    "TransferQueueControllerHandle",
    "ZMQServerInfo",
    "process_zmq_server_info",
    "TQDSError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfSpaceError",
    "TimeoutError_",
    "UnavailableError",
    "DTypeError",
]
