import pytest

from tradesense.common.clientip import client_address

TRUSTED = ["127.0.0.1/32", "10.0.0.0/8"]


@pytest.mark.parametrize(
    "meta, expected",
    [
        # Straight from a client: its connection, whatever header it forges.
        ({"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, "203.0.113.9"),
        # Through our nginx: the address nginx saw.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "198.51.100.7"}, "198.51.100.7"),
        # A forged hop before ours is skipped: the rightmost untrusted hop is the client.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.7, 10.1.2.3"}, "198.51.100.7"),
        ({"REMOTE_ADDR": "127.0.0.1"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "not-an-address"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "[2001:db8::1]:443"}, "2001:db8::1"),
        ({"REMOTE_ADDR": ""}, ""),
    ],
)
def test_client_address_comes_from_our_proxy_only(meta, expected):
    assert client_address(meta, TRUSTED) == expected
