"""The relay: one HTTP endpoint that fronts every provider.

`client.py` owns the shared httpx client and is the one place where transport
errors become Switchyard errors; `wires.py` registers one pure translator per
wire format (`openai_chat.py`, `anthropic_messages.py`); `sse.py` decodes
event streams; `transport.py` is the httpx transport the client runs on.
"""
