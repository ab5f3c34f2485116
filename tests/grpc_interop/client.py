"""A gRPC client in Python (grpcio), generated from kefu's .proto files when it starts.

tests/it/grpc.rs runs it against a test server: it lists and reads a conversation, sends a
message as an agent, checks an unknown id's status and reads the site's events from the first.
Needs `pip install grpcio grpcio-tools`.
"""

import argparse
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "wire", "proto")


def generate():
    """Generates the Python modules of the API into a temporary directory and imports them."""
    out = tempfile.mkdtemp(prefix="kefu-grpc-")
    code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "kefu.proto", "kefu/api/v1/api.proto"])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    sys.path.insert(0, out)
    from kefu.api.v1 import api_pb2, api_pb2_grpc
    return api_pb2, api_pb2_grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--conversation", type=int, required=True)
    parser.add_argument("--agent", type=int, required=True)
    args = parser.parse_args()
    api, services = generate()
    metadata = [("authorization", f"Bearer {args.token}")]
    with grpc.insecure_channel(args.address) as channel:
        conversations = services.ConversationsStub(channel)
        listed = conversations.List(api.ListConversationsRequest(), metadata=metadata, timeout=10)
        print("listed:", [item.conversation.id for item in listed.conversations])
        got = conversations.Get(api.ConversationRequest(conversation_id=args.conversation), metadata=metadata, timeout=10)
        print("status:", got.status)
        messages = services.MessagesStub(channel)
        request = api.SendMessageRequest(conversation_id=args.conversation, text="hello from grpcio",
                                         client_id="py-1", send_as=api.SEND_AS_AGENT, agent_id=args.agent)
        sent = messages.Send(request, metadata=metadata, timeout=10)
        print(f"sent seq={sent.message.seq}")
        try:
            conversations.Get(api.ConversationRequest(conversation_id=999999), metadata=metadata, timeout=10)
            sys.exit("an unknown conversation was found")
        except grpc.RpcError as error:
            print(f"unknown: {error.code().name}")
        events = services.EventsStub(channel).Subscribe(api.SubscribeRequest(after=0), metadata=metadata, timeout=10)
        for n, event in enumerate(events):
            print(f"event: {event.type} cursor={event.cursor}")
            if n == 2:
                events.cancel()
                break


if __name__ == "__main__":
    main()
