"""The server's HTTP API as the client scripts of this directory use it (the standard library
only)."""
import json
import urllib.request


def publish(http, key, topic, data):
    """`POST /v1/publish` with the admin key `key`; the answer (`seq`, `epoch`) once the
    topic's owner has sequenced the message."""
    req = urllib.request.Request(
        http + "/v1/publish",
        data=json.dumps({"topic": topic, "data": data}).encode(),
        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
        method="POST",
    )
    return json.loads(urllib.request.urlopen(req, timeout=30).read())
