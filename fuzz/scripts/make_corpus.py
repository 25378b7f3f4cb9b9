#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ (run from anywhere; idempotent).

Small inputs are written as they are; big ones (400 000 brackets, 1 MiB strings) as `.gen`
descriptions that the harness expands at run time (see fuzz/src/corpus.rs).
"""
import base64, hashlib, hmac, json, os, shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")
SECRET = b"syncgate-fuzz-secret-0123456789abcdef"  # fuzz/src/targets/jwt.rs SECRET
FAR = 4102444800  # 2100-01-01


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gen(target, name, *lines):
    put(target, name + ".gen", "\n".join(lines) + "\n")


def lit(s):
    return "lit " + json.dumps(s)


def rep(n, s):
    return "repeat %d %s" % (n, json.dumps(s))


def nest(n, inner="1"):
    return "[" * n + inner + "]" * n


def truncations(target, base, text):
    b = text.encode()
    for cut in sorted({1, len(b) // 3, len(b) // 2, len(b) - 1}):
        put(target, "%s-truncated-%d.json" % (base, cut), b[:cut])


HOSTILE_STRINGS = {
    "lone-high-surrogate": r'"\ud800"',
    "lone-low-surrogate": r'"\udc00"',
    "surrogate-pair": r'"\ud83d\ude00"',
    "high-then-non-low": r'"\ud800\u0041"',
    "high-then-newline": r'"\ud800\n"',
    "escaped-nul": r'"\u0000"',
    "escaped-controls": r'"\u0001\u001f\b\f\n\r\t"',
}
HOSTILE_NUMBERS = {
    "exp-overflow": "1e999999",
    "neg-exp-overflow": "-1e999999",
    "exp-underflow": "1e-999999",
    "u64-max": "18446744073709551615",
    "u64-max-plus-one": "18446744073709551616",
    "i64-min-minus-one": "-9223372036854775809",
    "30-digits": "123456789012345678901234567890",
    "neg-zero": "-0",
    "neg-zero-float": "-0.0",
    "f64-max": "1.7976931348623157e308",
    "f64-min-subnormal": "4.9e-324",
    "2pow53-plus-one": "9007199254740993",
}
RAW_BAD = {
    "raw-nul-in-string": b'"a\x00b"',
    "raw-control-in-string": b'"\x01\x1b"',
    "invalid-utf8-ff": b'"\xff\xfe"',
    "invalid-utf8-overlong": b'"\xc0\x80"',
    "invalid-utf8-surrogate": b'"\xed\xa0\x80"',
    "invalid-utf8-truncated": b'"\xe2\x82"',
    "invalid-utf8-too-big": b'"\xf4\x90\x80\x80"',
}


def frame():
    t = "frame"
    valid = {
        "auth": {"type": "auth", "id": 1, "token": "eyJhbGciOiJIUzI1NiJ9.e30.sig"},
        "subscribe": {"type": "subscribe", "id": "s-1", "channel": "room:1"},
        "subscribe-since": {"type": "subscribe", "channel": "dm:alice:bob", "since": 41},
        "unsubscribe": {"type": "unsubscribe", "channel": "room:1"},
        "ack": {"type": "ack", "id": 7, "channel": "dm:alice:bob", "seq": 7},
        "publish": {"type": "publish", "id": 2, "channel": "room:1", "event": "message", "data": {"text": "hi", "n": [1, 2.5, None, True]}},
        "publish-msg-id": {"type": "publish", "channel": "dm:a:b", "event": "e", "data": "x", "msg_id": "m-1"},
        "publish-msg-id-int": {"type": "publish", "channel": "dm:a:b", "event": "e", "msg_id": 17},
        "typing-start": {"type": "typing", "channel": "room:1", "state": "start"},
        "typing-stop": {"type": "typing", "channel": "room:1", "state": "stop"},
        "presence": {"type": "presence", "id": "p", "channel": "room:1"},
        "ping": {"type": "ping", "id": "a\"b"},
    }
    for k, v in valid.items():
        put(t, "valid-%s.json" % k, json.dumps(v, separators=(",", ":")))
    pre = '{"type":"publish","id":"r-1","channel":"a:b","event":"e","data":'
    for k, s in HOSTILE_STRINGS.items():
        put(t, "data-%s.json" % k, pre + s + "}")
        put(t, "event-%s.json" % k, '{"type":"publish","channel":"a:b","event":%s,"data":1}' % s)
        put(t, "id-%s.json" % k, '{"type":"ping","id":%s}' % s)
    for k, n in HOSTILE_NUMBERS.items():
        put(t, "data-%s.json" % k, pre + n + "}")
        put(t, "id-%s.json" % k, '{"type":"ping","id":%s}' % n)
        put(t, "since-%s.json" % k, '{"type":"subscribe","channel":"dm:a:b","since":%s}' % n)
        put(t, "msg-id-%s.json" % k, '{"type":"publish","channel":"dm:a:b","event":"e","msg_id":%s}' % n)
    for k, b in RAW_BAD.items():
        put(t, "data-%s.json" % k, pre.encode() + b + b"}")
        put(t, "channel-%s.json" % k, b'{"type":"subscribe","channel":' + b + b"}")
    put(t, "dup-type.json", '{"type":"ping","type":"publish","channel":"a:b","event":"e"}')
    put(t, "dup-data-keys.json", pre + '{"a":1,"a":2}}')
    put(t, "dup-id.json", '{"id":1,"type":"ping","id":"two"}')
    put(t, "escaped-key.json", '{"\\u0074ype":"ping"}')
    put(t, "bom.json", b"\xef\xbb\xbf" + b'{"type":"ping"}')
    put(t, "trailing-garbage.json", '{"type":"ping"} x')
    put(t, "trailing-comma.json", '{"type":"ping",}')
    put(t, "empty.json", "")
    put(t, "whitespace.json", " \n\t\r ")
    for k, v in {"array": "[]", "null": "null", "string": '"ping"', "number": "1", "empty-object": "{}"}.items():
        put(t, "top-%s.json" % k, v)
    put(t, "event-257.json", '{"type":"publish","channel":"a:b","event":"%s"}' % ("e" * 257))
    put(t, "event-256.json", '{"type":"publish","channel":"a:b","event":"%s"}' % ("e" * 256))
    put(t, "msg-id-129.json", '{"type":"publish","channel":"a:b","event":"e","msg_id":"%s"}' % ("m" * 129))
    put(t, "id-129.json", '{"type":"ping","id":"%s"}' % ("i" * 127))
    put(t, "id-object.json", '{"type":"ping","id":{"x":1}}')
    put(t, "data-127-deep.json", pre + nest(127) + "}")
    put(t, "data-128-deep.json", pre + nest(128) + "}")
    put(t, "deep-id-first.json", '{ "id" : 42 , "data":%s}' % nest(200))
    put(t, "deep-id-after.json", '{"data":%s,"id":42}' % nest(200))
    put(t, "deep-id-escaped-quote.json", '{"id":"a\\"b","data":%s}' % nest(300))
    put(t, "data-511-deep.json", pre + nest(511) + "}")
    put(t, "data-512-deep.json", pre + nest(512) + "}")
    put(t, "data-objects-511-deep.json", pre + '{"a":' * 511 + "1" + "}" * 511 + "}")
    put(t, "data-1023-deep.json", pre + nest(1023) + "}")
    put(t, "data-1024-deep.json", pre + nest(1024) + "}")
    gen(t, "bracket-bomb-400k", "# 400 000 '[' then as many ']'", rep(400000, "["), rep(400000, "]"))
    gen(t, "object-bomb-100k", "# 100 000 levels of {\"a\": ... }", rep(100000, '{"a":'), lit("1"), rep(100000, "}"))
    gen(t, "unclosed-400k", "# 400 000 '[' and no ']'", rep(400000, "["))
    gen(t, "bomb-inside-string", "# a frame whose 400 000 brackets are inside a string", lit(pre + '"'), rep(400000, "["), lit('"}'))
    gen(t, "data-string-1mib", "# publish with a 1 MiB string", lit(pre + '"'), rep(1 << 20, "a"), lit('"}'))
    gen(t, "data-escapes-1mib", "# publish with 1 MiB of \\u escapes", lit(pre + '"'), rep(1 << 18, "\\u00e9"), lit('"}'))
    gen(t, "channel-1mib", "# subscribe to a 1 MiB channel name", lit('{"type":"subscribe","channel":"'), rep(1 << 20, "c"), lit('"}'))
    gen(t, "many-keys", "# 5 000 duplicate members", lit('{"type":"ping"'), rep(5000, ',"k":1'), lit("}"))
    gen(t, "long-number", "# a 100 000-digit number", lit(pre), rep(100000, "9"), lit("}"))
    gen(t, "nul-bytes", "# a frame of NUL bytes", "repeat-hex 4096 00")
    truncations(t, "publish", json.dumps(valid["publish"], separators=(",", ":")))


def wire():
    t = "wire"
    def rec(inst, origin, kind, frame):
        return inst.to_bytes(8, "big") + origin.to_bytes(8, "big") + bytes([kind]) + len(frame).to_bytes(4, "big") + frame
    ev = b'{"type":"event","channel":"a:b","event":"e","data":1}'
    one = b"SG1" + rec(7, 42, 0, ev)
    two = one + rec(7, 43, 1, b"\x00\x01\x02")
    put(t, "one-text.bin", one)
    put(t, "two-records.bin", two)
    put(t, "magic-only.bin", b"SG1")
    put(t, "empty-frame.bin", b"SG1" + rec(0, 0, 0, b""))
    put(t, "max-ids.bin", b"SG1" + rec(2**64 - 1, 2**64 - 1, 1, b"x"))
    put(t, "kind-2.bin", b"SG1" + rec(1, 1, 2, b"x"))
    put(t, "kind-ff.bin", b"SG1" + rec(1, 1, 255, b"x"))
    for cut in [1, 2, 4, 10, 23, len(one) - 1]:
        put(t, "truncated-%d.bin" % cut, one[:cut])
    put(t, "len-u32-max.bin", b"SG1" + rec(1, 1, 0, b"")[:17] + b"\xff\xff\xff\xff" + b"abc")
    put(t, "len-plus-one.bin", b"SG1" + rec(1, 1, 0, b"ab")[:17] + b"\x00\x00\x00\x03" + b"ab")
    put(t, "trailing-partial-header.bin", two + b"\x00" * 20)
    put(t, "external-json.json", b'{"event":"e","data":1}')
    put(t, "sg-no-1.bin", b"SG")
    put(t, "wrong-magic.bin", b"SG2" + rec(1, 1, 0, b"x"))
    put(t, "empty.bin", b"")
    gen(t, "frame-1mib", "# one record with a 1 MiB frame", "hex 53 47 31 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02 00 00 10 00 00", "repeat-hex 1048576 61")
    gen(t, "many-empty-records", "# 20 000 empty records", "hex 53 47 31", "repeat-hex 20000 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02 00 00 00 00 00")


def external():
    t = "external"
    put(t, "valid.json", '{"event":"order.created","data":{"id":42,"items":[1,2,3]}}')
    put(t, "no-data.json", '{"event":"ping"}')
    put(t, "null-data.json", '{"event":"e","data":null}')
    put(t, "extra-keys.json", '{"event":"e","data":1,"channel":"x","type":"y"}')
    put(t, "event-empty.json", '{"event":"","data":1}')
    put(t, "event-256.json", '{"event":"%s","data":1}' % ("e" * 256))
    put(t, "event-257.json", '{"event":"%s","data":1}' % ("e" * 257))
    put(t, "event-number.json", '{"event":1,"data":1}')
    put(t, "dup-event.json", '{"event":"a","event":"b","data":1}')
    put(t, "dup-data.json", '{"event":"a","data":1,"data":2}')
    put(t, "dup-keys-in-data.json", '{"event":"a","data":{"k":1,"k":2}}')
    for k, s in HOSTILE_STRINGS.items():
        put(t, "data-%s.json" % k, '{"event":"e","data":%s}' % s)
        put(t, "event-%s.json" % k, '{"event":%s,"data":1}' % s)
    for k, n in HOSTILE_NUMBERS.items():
        put(t, "data-%s.json" % k, '{"event":"e","data":%s}' % n)
    for k, b in RAW_BAD.items():
        put(t, "data-%s.json" % k, b'{"event":"e","data":' + b + b"}")
    put(t, "data-127-deep.json", '{"event":"e","data":%s}' % nest(127))
    put(t, "data-128-deep.json", '{"event":"e","data":%s}' % nest(128))
    put(t, "data-511-deep.json", '{"event":"e","data":%s}' % nest(511))
    put(t, "data-objects-511-deep.json", '{"event":"e","data":%s}' % ('{"a":' * 511 + "1" + "}" * 511))
    put(t, "data-1023-deep.json", '{"event":"e","data":%s}' % nest(1023))
    gen(t, "bracket-bomb-400k", rep(400000, "["), rep(400000, "]"))
    gen(t, "data-string-1mib", lit('{"event":"e","data":"'), rep(1 << 20, "a"), lit('"}'))
    gen(t, "event-1mib", lit('{"event":"'), rep(1 << 20, "e"), lit('"}'))
    put(t, "sg1-prefix.bin", b"SG1\x00")
    put(t, "top-array.json", "[]")
    put(t, "bom.json", b"\xef\xbb\xbf" + b'{"event":"e"}')
    truncations(t, "valid", '{"event":"order.created","data":{"id":42,"items":[1,2,3]}}')


def jwks():
    t = "jwks"
    keys = [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": "kJ-XxtoM3BrRyDlfHErckSlnAmm8EilqBxH2dyEpjq1UdjOKZOHnVh3T1q1Pc1eYtDLfwjGqzxOarYGCjX-k-9woz96sDaoYTD92iZhdTHdwPFOqcWaLgIqjhFfjRPmjo5ol6NiVhuIg8hLzoPrt6XeADaapmNmZrMIP2LbMBJQ5WY46zro22P30UWKwAh6iGs3126FeJSwKwe-BBjF3o_ACq2ElANkamlmmiQDZsntqarb2Wd5sIlkF1vbY57i3Rw9xxAX4SMP4xIa0i6L1xBMYDiE8t-X9S6qk-NMvJ6EYKIXSJQmsY799-yFlVW8ImupfvtN6Z6uVZH1iPSw2LQ", "e": "AQAB"},
        {"kty": "EC", "kid": "P-256", "crv": "P-256", "x": "yvihXbTtFEHJD8Cua9ooh-QYF0P90MLPMuKrjg6d6EE", "y": "Qna54EBx57cLtpO88b_gSMQaeKX_n1vnB1n6TQ5wCy0"},
        {"kty": "EC", "kid": "P-384", "crv": "P-384", "x": "poCxLwuq4HGEQdde1YDQM_adScPB_Rh1lN7DAfLzTikh3c4K7libCwFRHiP3Rdky", "y": "3VujF0BlFh5tszZwxSGchiVyxpuG1fM7MfsTEiK6vEg5wpezjGkLUUXQDNyu8tmJ"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "jBUxbM4y_RWBVU9Zj45oBkmIT47Na1XSTT4c9-fw3qo"},
    ]
    put(t, "valid-4-keys.json", json.dumps({"keys": keys}))
    for i, k in enumerate(keys):
        put(t, "valid-key-%d.json" % i, json.dumps({"keys": [k]}))
    rsa = keys[0]
    variants = {
        "rsa-hs256-alg": dict(rsa, alg="HS256"),
        "rsa-none-alg": dict(rsa, alg="none"),
        "rsa-use-enc": dict(rsa, use="enc"),
        "rsa-bad-n": dict(rsa, n="!!!"),
        "rsa-padded-n": dict(rsa, n=rsa["n"] + "=="),
        "rsa-empty-e": dict(rsa, e=""),
        "rsa-huge-e": dict(rsa, e="A" * 4000),
        "rsa-n-number": dict(rsa, n=12345),
        "ec-p521": dict(keys[1], crv="P-521"),
        "ec-missing-y": {k: v for k, v in keys[1].items() if k != "y"},
        "ec-x-too-long": dict(keys[1], x=keys[1]["x"] * 2),
        "okp-x25519": dict(keys[3], crv="X25519"),
        "oct": {"kty": "oct", "k": "c2VjcmV0"},
        "no-kty": {"n": "AQAB"},
    }
    for k, v in variants.items():
        put(t, "%s.json" % k, json.dumps({"keys": [v]}))
    put(t, "empty-keys.json", '{"keys":[]}')
    put(t, "keys-not-array.json", '{"keys":{}}')
    put(t, "keys-null.json", '{"keys":null}')
    put(t, "no-keys.json", "{}")
    put(t, "dup-keys.json", '{"keys":[],"keys":[1]}')
    put(t, "keys-of-scalars.json", '{"keys":[1,"a",null,[],{}]}')
    for k, s in HOSTILE_STRINGS.items():
        put(t, "kid-%s.json" % k, '{"keys":[{"kty":"OKP","crv":"Ed25519","kid":%s,"x":"jBUxbM4y_RWBVU9Zj45oBkmIT47Na1XSTT4c9-fw3qo"}]}' % s)
    for k, n in HOSTILE_NUMBERS.items():
        put(t, "number-%s.json" % k, '{"keys":[{"kty":"RSA","n":%s,"e":"AQAB"}]}' % n)
    for k, b in RAW_BAD.items():
        put(t, "kty-%s.json" % k, b'{"keys":[{"kty":' + b + b"}]}")
    put(t, "key-127-deep.json", '{"keys":[%s]}' % nest(126))
    put(t, "key-128-deep.json", '{"keys":[%s]}' % nest(127))
    put(t, "key-objects-512-deep.json", '{"keys":[%s]}' % ('{"a":' * 510 + "1" + "}" * 510))
    gen(t, "bracket-bomb-400k", lit('{"keys":'), rep(400000, "["), rep(400000, "]"), lit("}"))
    gen(t, "kid-1mib", lit('{"keys":[{"kty":"RSA","kid":"'), rep(1 << 20, "k"), lit('"}]}'))
    gen(t, "many-keys", lit('{"keys":['), rep(20000, '{"kty":"oct"},'), lit('{"kty":"oct"}]}'))
    truncations(t, "valid", json.dumps({"keys": keys[1:2]}))


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(header, payload, key=SECRET, sig=None):
    if not isinstance(header, bytes):
        header = header.encode("utf-8", "surrogatepass")
    if not isinstance(payload, bytes):
        payload = payload.encode("utf-8", "surrogatepass")
    msg = b64(header) + "." + b64(payload)
    if sig is None:
        sig = b64(hmac.new(key, msg.encode(), hashlib.sha256).digest())
    return msg + "." + sig


def jwt():
    t = "jwt"
    H = '{"alg":"HS256","typ":"JWT"}'
    def claims(**kw):
        c = {"sub": "alice", "exp": FAR}
        c.update(kw)
        return json.dumps({k: v for k, v in c.items() if v is not None})
    put(t, "valid.txt", token(H, claims()))
    put(t, "valid-full.txt", token(H, claims(iat=1700000000, did="phone-1", channels=["room:*", "dm:*"])))
    put(t, "valid-user-id-claim.txt", token(H, json.dumps({"user_id": "bob", "exp": FAR})))
    put(t, "valid-numeric-sub.txt", token(H, claims(sub=12345)))
    put(t, "alg-none-unsigned.txt", token('{"alg":"none"}', claims(), sig=""))
    put(t, "alg-none-signed.txt", token('{"alg":"none"}', claims()))
    put(t, "alg-None.txt", token('{"alg":"None","typ":"JWT"}', claims(), sig=""))
    put(t, "alg-hs512.txt", token('{"alg":"HS512"}', claims()))
    put(t, "alg-rs256.txt", token('{"alg":"RS256"}', claims()))
    put(t, "dup-alg.txt", token('{"alg":"none","alg":"HS256"}', claims()))
    put(t, "header-jwk.txt", token('{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}', claims()))
    put(t, "header-kid-surrogate.txt", token('{"alg":"HS256","kid":"\\ud800"}', claims()))
    put(t, "wrong-key.txt", token(H, claims(), key=b"wrong"))
    put(t, "expired.txt", token(H, claims(exp=1)))
    for k, n in {"1e30": "1e30", "u64-max": "18446744073709551615", "u64-max-plus-one": "18446744073709551616",
                 "negative": "-1", "float": "4102444800.5", "string": '"4102444800"', "exp-overflow": "1e999999",
                 "null": "null", "neg-zero": "-0", "i64-max": "9223372036854775807"}.items():
        put(t, "exp-%s.txt" % k, token(H, '{"sub":"alice","exp":%s}' % n))
    for k, s in {"huge-number": "123456789012345678901234567890", "float": "1.5", "negative": "-1",
                 "lone-surrogate": '"\\ud800"', "nul": '"\\u0000"', "colon": '"a:b"', "empty": '""',
                 "long": '"%s"' % ("u" * 200), "object": '{"a":1}', "exp-overflow": "1e999999"}.items():
        put(t, "sub-%s.txt" % k, token(H, '{"sub":%s,"exp":%d}' % (s, FAR)))
    put(t, "dup-exp.txt", token(H, '{"sub":"alice","exp":1,"exp":%d}' % FAR))
    put(t, "dup-sub.txt", token(H, '{"sub":"alice","sub":"bob","exp":%d}' % FAR))
    put(t, "channels-not-array.txt", token(H, claims(channels="room:*")))
    put(t, "channels-numbers.txt", token(H, claims(channels=[1, 2])))
    put(t, "did-number.txt", token(H, claims(did=7)))
    put(t, "claim-deep-127.txt", token(H, '{"sub":"alice","exp":%d,"x":%s}' % (FAR, nest(126))))
    put(t, "claim-deep-200.txt", token(H, '{"sub":"alice","exp":%d,"x":%s}' % (FAR, nest(200))))
    put(t, "claim-deep-5000.txt", token(H, '{"sub":"alice","exp":%d,"x":%s}' % (FAR, nest(5000))))
    put(t, "channels-deep.txt", token(H, '{"sub":"alice","exp":%d,"channels":%s}' % (FAR, nest(3000, '"a"'))))
    put(t, "payload-invalid-utf8.txt", token(H, b'{"sub":"\xff","exp":%d}' % FAR))
    put(t, "payload-not-json.txt", token(H, "not json"))
    put(t, "payload-array.txt", token(H, "[1]"))
    valid = token(H, claims())
    h, p, s = valid.split(".")
    put(t, "padded.txt", h + "==." + p + "." + s)
    put(t, "standard-alphabet.txt", valid.replace("-", "+").replace("_", "/"))
    put(t, "four-segments.txt", valid + "." + s)
    put(t, "two-segments.txt", h + "." + p)
    put(t, "empty-segments.txt", "..")
    put(t, "empty.txt", "")
    put(t, "spaces.txt", " " + valid + " ")
    put(t, "non-ascii.txt", valid[:10] + "\u00e9" + valid[11:])
    for cut in [1, len(h), len(h) + 1, len(valid) // 2, len(valid) - 1]:
        put(t, "truncated-%d.txt" % cut, valid[:cut])
    gen(t, "too-long", "# a 16 KiB + 1 token", lit(h + "." + p + "."), rep(16 * 1024 + 1 - len(h) - len(p) - 2, "A"))
    gen(t, "dots-1mib", rep(1 << 20, "."))


def http_json():
    t = "http_json"
    bodies = {
        "publish": {"channel": "room:1", "event": "message", "data": {"text": "hi"}},
        "publish-durable": {"channel": "dm:alice:bob", "event": "e", "data": [1, 2], "msg_id": "m-1"},
        "publish-no-data": {"channel": "room:1", "event": "e"},
        "publish-unknown-field": {"channel": "room:1", "event": "e", "extra": 1},
        "disconnect": {"user_id": "alice", "device_id": "phone-1"},
        "register": {"email": "a@example.com", "password": "hunter2hunter2", "username": "alice"},
        "login": {"email": "a@example.com", "password": "hunter2hunter2", "device_id": "phone-1"},
        "refresh": {"refresh_token": "abc"},
        "change-password": {"current_password": "a", "new_password": "b"},
        "forgot": {"email": "a@example.com"},
        "reset": {"email": "a@example.com", "otp": "123456", "new_password": "b"},
    }
    for k, v in bodies.items():
        put(t, "%s.json" % k, json.dumps(v))
    put(t, "dup-channel.json", '{"channel":"a:b","channel":"c:d","event":"e"}')
    put(t, "dup-password.json", '{"email":"a","password":"x","password":"y"}')
    put(t, "dup-keys-in-data.json", '{"channel":"a:b","event":"e","data":{"k":1,"k":2}}')
    for k, s in HOSTILE_STRINGS.items():
        put(t, "data-%s.json" % k, '{"channel":"a:b","event":"e","data":%s}' % s)
        put(t, "password-%s.json" % k, '{"email":"a@example.com","password":%s}' % s)
    for k, n in HOSTILE_NUMBERS.items():
        put(t, "data-%s.json" % k, '{"channel":"a:b","event":"e","data":%s}' % n)
        put(t, "top-%s.json" % k, n)
    for k, b in RAW_BAD.items():
        put(t, "email-%s.json" % k, b'{"email":' + b + b',"password":"p"}')
    put(t, "data-127-deep.json", '{"channel":"a:b","event":"e","data":%s}' % nest(127))
    put(t, "data-128-deep.json", '{"channel":"a:b","event":"e","data":%s}' % nest(128))
    put(t, "value-512-deep.json", nest(512))
    put(t, "value-513-deep.json", nest(513))
    put(t, "objects-512-deep.json", '{"a":' * 512 + "1" + "}" * 512)
    put(t, "value-1024-deep.json", nest(1024))
    put(t, "value-1025-deep.json", nest(1025))
    put(t, "objects-1024-deep.json", '{"a":' * 1024 + "1" + "}" * 1024)
    gen(t, "bracket-bomb-400k", rep(400000, "["), rep(400000, "]"))
    gen(t, "data-string-1mib", lit('{"channel":"a:b","event":"e","data":"'), rep(1 << 20, "a"), lit('"}'))
    gen(t, "password-1mib", lit('{"email":"a@example.com","password":"'), rep(1 << 20, "p"), lit('"}'))
    gen(t, "array-of-100k-numbers", lit("["), rep(99999, "1e308,"), lit("1]"))
    put(t, "bom.json", b"\xef\xbb\xbf{}")
    put(t, "empty.json", "")
    put(t, "trailing-comma.json", '{"email":"a","password":"p",}')
    put(t, "trailing-garbage.json", "{} {}")
    put(t, "nul-after.json", b"{}\x00")
    truncations(t, "publish", json.dumps(bodies["publish"]))


def check_depth():
    t = "check_depth"
    cases = {
        "brackets-in-strings": '{"a":"[[[[[[[[[[","b":"\\"[[[["}',
        "escaped-backslash": '{"a":"\\\\"}',
        "escape-then-bracket": '["\\\\\\"[[[", [1]]',
        "escape-then-brackets-deep": '["\\\\\\"[[[", [[1]]]',
        "stray-closers": "]]]]}}}[",
        "unterminated-string": '"\\',
        "unterminated-with-brackets": '["abc[[[[[[',
        "closers-then-openers": "]]]][[[[1]]]]",
        "mixed-128": "[" * 64 + '{"a":' * 64 + "1" + "}" * 64 + "]" * 64,
        "nest-127": nest(127),
        "nest-128": nest(128),
        "nest-129": nest(129),
        "nest-511": nest(511),
        "nest-512": nest(512),
        "nest-513": nest(513),
        "nest-1024": nest(1024),
        "nest-1025": nest(1025),
        "scalar": "1",
        "empty": "",
        "unicode-quote-lookalike": '["\u201c[[[\u201d"]',
        "lone-surrogate-in-deep": nest(100, '"\\ud800"'),
        "backslash-at-end": '["a\\',
    }
    for k, v in cases.items():
        put(t, "%s.json" % k, v)
    put(t, "invalid-utf8-brackets.json", b'["\xff[[[", [1]]')
    gen(t, "bracket-bomb-400k", rep(400000, "["), rep(400000, "]"))
    gen(t, "bomb-in-string", lit('"'), rep(400000, "["), lit('"'))
    gen(t, "escaped-quotes-1mib", lit('["'), rep(1 << 19, '\\"'), lit('[[[["]'))


if __name__ == "__main__":
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    for f in (frame, wire, external, jwks, jwt, http_json, check_depth):
        f()
    for d in sorted(os.listdir(ROOT)):
        print(d, len(os.listdir(os.path.join(ROOT, d))))
