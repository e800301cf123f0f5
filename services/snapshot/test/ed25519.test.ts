import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { generateKey, getPublicKey, sign, verify } from "../src/crypto/ed25519.js";

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");

// RFC 8032 §7.1, Ed25519 TEST 1, 2 and 3.
const RFC8032_VECTORS = [
  {
    name: "TEST 1 (empty message)",
    secretKey: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    publicKey: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    message: "",
    signature:
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
  },
  {
    name: "TEST 2 (1 byte)",
    secretKey: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    publicKey: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    message: "72",
    signature:
      "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
  },
  {
    name: "TEST 3 (2 bytes)",
    secretKey: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
    publicKey: "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    message: "af82",
    signature:
      "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
  },
] as const;

describe("ed25519 (RFC 8032 §7.1 vectors)", () => {
  for (const v of RFC8032_VECTORS) {
    describe(v.name, () => {
      it("derives the public key", () => {
        assert.equal(toHex(getPublicKey(hex(v.secretKey))), v.publicKey);
      });
      it("produces the signature", () => {
        assert.equal(toHex(sign(hex(v.message), hex(v.secretKey))), v.signature);
      });
      it("verifies the signature", () => {
        assert.equal(verify(hex(v.signature), hex(v.message), hex(v.publicKey)), true);
      });
      it("rejects a flipped bit in signature, message or key", () => {
        const sig = hex(v.signature);
        sig[0]! ^= 1;
        assert.equal(verify(sig, hex(v.message), hex(v.publicKey)), false);
        const msg = Buffer.concat([hex(v.message), Buffer.of(0)]);
        assert.equal(verify(hex(v.signature), msg, hex(v.publicKey)), false);
        const pk = hex(v.publicKey);
        pk[1]! ^= 1;
        assert.equal(verify(hex(v.signature), hex(v.message), pk), false);
      });
    });
  }

  it("treats wrong lengths as invalid rather than throwing", () => {
    const v = RFC8032_VECTORS[0];
    assert.equal(verify(hex(v.signature).subarray(0, 63), hex(v.message), hex(v.publicKey)), false);
    assert.equal(verify(hex(v.signature), hex(v.message), hex(v.publicKey).subarray(0, 31)), false);
  });

  it("rejects a non-canonical S (s + L), which would make signatures malleable", () => {
    const v = RFC8032_VECTORS[1];
    const sig = hex(v.signature);
    const L = (1n << 252n) + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i]!);
    let t = s + L;
    for (let i = 32; i < 64; i++) {
      sig[i] = Number(t & 0xffn);
      t >>= 8n;
    }
    assert.equal(verify(sig, hex(v.message), hex(v.publicKey)), false);
  });

  it("generates working, distinct key pairs", () => {
    const a = generateKey();
    const b = generateKey();
    assert.equal(a.secretKey.length, 32);
    assert.equal(a.publicKey.length, 32);
    assert.notEqual(toHex(a.publicKey), toHex(b.publicKey));
    assert.deepEqual(getPublicKey(a.secretKey), a.publicKey);
    const msg = new TextEncoder().encode("hello");
    assert.equal(verify(sign(msg, a.secretKey), msg, a.publicKey), true);
    assert.equal(verify(sign(msg, a.secretKey), msg, b.publicKey), false);
  });
});
