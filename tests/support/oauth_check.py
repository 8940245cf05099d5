"""An independent OAuth 1.0a HMAC-SHA1 signature check, written from RFC 5849.

The scripted test server checks with it that what the client sends is
signed correctly, and the server's tests sign with it, so neither side is
tested only against the library it uses itself.
"""
import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, unquote, urlsplit


def percent(value: str) -> str:
    return quote(value, safe="~-._")


def parse_authorization(header: str) -> dict:
    scheme, _, rest = header.partition(" ")
    assert scheme == "OAuth", header
    params = {}
    for item in rest.split(","):
        name, _, value = item.strip().partition("=")
        params[unquote(name)] = unquote(value.strip('"'))
    return params


def signature_base_string(method: str, url: str, oauth_params: dict, form: list) -> str:
    parts = urlsplit(url)
    base_url = f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
    pairs = [(k, v) for k, v in oauth_params.items() if k not in ("oauth_signature", "realm")]
    pairs += parse_qsl(parts.query, keep_blank_values=True) + list(form)
    normalized = "&".join(f"{k}={v}" for k, v in sorted((percent(k), percent(v)) for k, v in pairs))
    return "&".join(percent(p) for p in (method.upper(), base_url, normalized))


def hmac_sha1_signature(secret: str, base_string: str) -> str:
    key = f"{percent(secret)}&".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha1).digest()).decode()


def signature_is_valid(method: str, url: str, authorization: str, form: list,
                       key: str, secret: str) -> bool:
    oauth = parse_authorization(authorization)
    if oauth.get("oauth_consumer_key") != key or oauth.get("oauth_signature_method") != "HMAC-SHA1":
        return False
    expected = hmac_sha1_signature(secret, signature_base_string(method, url, oauth, form))
    return hmac.compare_digest(expected, oauth.get("oauth_signature", ""))


def rfc5849_authorization(method: str, url: str, params: list, key: str, secret: str,
                          nonce: str, timestamp: str):
    """An Authorization header signed by hand (RFC 5849 3.4, 3.5.1), and its signature."""
    oauth = {"oauth_consumer_key": key, "oauth_nonce": nonce,
             "oauth_signature_method": "HMAC-SHA1", "oauth_timestamp": timestamp,
             "oauth_version": "1.0"}
    oauth["oauth_signature"] = hmac_sha1_signature(
        secret, signature_base_string(method, url, oauth, params))
    header = "OAuth " + ", ".join(f'{k}="{percent(v)}"' for k, v in oauth.items())
    return header, oauth["oauth_signature"]
