"""Every RPC, message, field, oneof and enum value is documented, as reflection serves it."""

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .conftest import Gateway

# FileDescriptorProto field numbers that make up source_code_info paths.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED, ONEOF = 2, 3, 8  # inside a message
VALUE, METHOD = 2, 2  # inside an enum, inside a service


def documented_elements(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Every element's path -> a readable name."""
    found: dict[tuple[int, ...], str] = {}

    def message(path: tuple[int, ...], proto: descriptor_pb2.DescriptorProto) -> None:
        if proto.options.map_entry:
            return  # synthesized for map fields; the map field carries the comment
        found[path] = proto.name
        for i, field in enumerate(proto.field):
            found[(*path, FIELD, i)] = f"{proto.name}.{field.name}"
        for i, oneof in enumerate(proto.oneof_decl):
            if not oneof.name.startswith("_"):  # proto3 `optional` makes synthetic oneofs
                found[(*path, ONEOF, i)] = f"{proto.name}.{oneof.name}"
        for i, nested in enumerate(proto.nested_type):
            message((*path, NESTED, i), nested)

    for i, proto in enumerate(file.message_type):
        message((MESSAGE, i), proto)
    for i, enum in enumerate(file.enum_type):
        found[(ENUM, i)] = enum.name
        for j, value in enumerate(enum.value):
            found[(ENUM, i, VALUE, j)] = value.name
    for i, service in enumerate(file.service):
        found[(SERVICE, i)] = service.name
        for j, method in enumerate(service.method):
            found[(SERVICE, i, METHOD, j)] = f"{service.name}.{method.name}"
    return found


async def test_reflection_serves_a_comment_for_every_element(gateway: Gateway):
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    call = stub.ServerReflectionInfo()
    await call.write(
        reflection_pb2.ServerReflectionRequest(file_by_filename="switchyard/v1/gateway.proto")
    )
    answer = await call.read()
    await call.done_writing()
    [raw] = answer.file_descriptor_response.file_descriptor_proto[:1]
    file = descriptor_pb2.FileDescriptorProto.FromString(raw)
    comments = {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
    }
    elements = documented_elements(file)
    assert len(elements) > 150  # the walk really covers the contract
    undocumented = sorted(name for path, name in elements.items() if not comments.get(path))
    assert undocumented == []
