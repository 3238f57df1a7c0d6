import httpx

from plait.log import backend_for


def test_track_is_committed_to_the_log(server):
    response = httpx.post(f"{server.url}/v1/track", auth=(server.write_key, ""),
                          json={"userId": "u1", "event": "Signed Up"})  # fmt: skip
    assert response.status_code == 200, response.text
    records = backend_for(server.store).read(0, 10)
    assert [(r.type, r.source_id) for r in records] == [("track", server.source_id)]
