"""Server reflection that keeps the contract's comments.

Python's generated descriptors carry no source info, so through the stock
reflection service `grpcurl describe` would show the API without a word of
its documentation. `make proto` also writes `gateway.binpb`, a descriptor
set WITH source info; `SourceInfoPool` answers reflection from it.

grpc_reflection asks its pool for files and then calls only `name`,
`dependencies` and `CopyToProto` on them; `_FileWithSource` answers those
three from the descriptor set. tests/e2e/test_reflection.py checks the
comments really arrive.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from server.decoding import add_service

DESCRIPTOR_SET = ("switchyard.v1", "gateway.binpb")


class _FileWithSource:
    """A file descriptor stand-in whose proto form includes source info."""

    __slots__ = ("_proto", "dependencies", "name")

    def __init__(
        self, name: str, dependencies: list[Any], proto: descriptor_pb2.FileDescriptorProto
    ) -> None:
        self.name = name
        self.dependencies = dependencies
        self._proto = proto

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        """Copy the full file, comments included."""
        proto.CopyFrom(self._proto)


class SourceInfoPool:
    """The default descriptor pool, with documented files served in full."""

    __slots__ = ("_files", "_pool")

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self._pool = descriptor_pool.Default()
        self._files = {file.name: file for file in descriptor_set.file}

    def _wrap(self, descriptor: FileDescriptor) -> Any:
        proto = self._files.get(descriptor.name)
        if proto is None:
            return descriptor
        dependencies = [self._wrap(dependency) for dependency in descriptor.dependencies]
        return _FileWithSource(descriptor.name, dependencies, proto)

    def FindFileByName(self, name: str) -> Any:  # noqa: N802
        """The file called `name`."""
        return self._wrap(self._pool.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> Any:  # noqa: N802
        """The file that defines `symbol`."""
        return self._wrap(self._pool.FindFileContainingSymbol(symbol))

    def __getattr__(self, name: str) -> Any:
        # Extension lookups and anything else go to the real pool unchanged.
        return getattr(self._pool, name)


def enable(service_names: tuple[str, ...], server: Any) -> None:
    """Serve reflection for `service_names` with the contract's comments."""
    package, filename = DESCRIPTOR_SET
    data = resources.files(package).joinpath(filename).read_bytes()
    pool = SourceInfoPool(descriptor_pb2.FileDescriptorSet.FromString(data))
    # Registered like the other services, so bytes that do not decode are refused cleanly.
    servicer = reflection.aio.ReflectionServicer(service_names, pool=pool)
    add_service(server, reflection_pb2_grpc.add_ServerReflectionServicer_to_server, servicer)
