"""TransferQueue: a C++ data plane for RL post-training, with upstream
TransferQueue's Python API (0.1.10/0.1.11: ``init``, the key-value API,
``TransferQueueClient``, ``BatchMeta``, samplers, streaming data loaders) and
the seed's (``TransferQueueController.remote()``, ``process_zmq_server_info``).

    import transfer_queue as tq
    tq.init()
    tq.kv_put(key="a", partition_id="train", fields={"ids": torch.tensor([1, 2])})
    td = tq.kv_batch_get(keys="a", partition_id="train")
    tq.close()

put takes a tensordict.TensorDict (or a dict of tensors, arrays and lists);
get_data returns one.
"""

from _tqds import (  # noqa: F401  (re-exported exception types)
    AlreadyExistsError,
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

from .client import AsyncTransferQueueClient, StorageKeyNotFoundError, TransferQueueClient  # noqa: F401
from .controller import (  # noqa: F401
    TransferQueueController,
    TransferQueueControllerHandle,
    ZMQServerInfo,
    process_zmq_server_info,
)
from .dataloader import StreamingDataLoader, StreamingDataset  # noqa: F401
from .interface import (  # noqa: F401
    __version__,
    close,
    get_client,
    get_metrics_endpoint,
    init,
    load_checkpoint,
    save_checkpoint,
)
from .kv import (  # noqa: F401
    async_kv_batch_get,
    async_kv_batch_get_by_meta,
    async_kv_batch_put,
    async_kv_clear,
    async_kv_list,
    async_kv_put,
    kv_batch_get,
    kv_batch_get_by_meta,
    kv_batch_put,
    kv_clear,
    kv_list,
    kv_put,
)
from .metadata import BatchMeta, KVBatchMeta  # noqa: F401
from .sampler import (  # noqa: F401
    BaseSampler,
    GRPOGroupNSampler,
    RankAwareSampler,
    SeqlenBalancedSampler,
    SequentialSampler,
)

__all__ = [
    # upstream's names
    "init",
    "close",
    "get_client",
    "get_metrics_endpoint",
    "kv_put",
    "kv_batch_put",
    "kv_batch_get",
    "kv_batch_get_by_meta",
    "kv_list",
    "kv_clear",
    "async_kv_put",
    "async_kv_batch_put",
    "async_kv_batch_get",
    "async_kv_batch_get_by_meta",
    "async_kv_list",
    "async_kv_clear",
    "save_checkpoint",
    "load_checkpoint",
    "BatchMeta",
    "KVBatchMeta",
    "TransferQueueClient",
    "AsyncTransferQueueClient",
    "StreamingDataset",
    "StreamingDataLoader",
    "StorageKeyNotFoundError",
    "BaseSampler",
    "SequentialSampler",
    "GRPOGroupNSampler",
    "RankAwareSampler",
    "SeqlenBalancedSampler",
    # the seed's
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
