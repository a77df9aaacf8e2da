# Yours: nexus created this file once and never touches it again.
def test_info(client):
    assert client.get("/api/info").json() == {"service": "streaming-service-v2"}
