// edgeae's packet, wire format v1: see edgeae_packet.h.
#include "edgeae_packet.h"

#include <string.h>

uint16_t edgeae_crc16(const uint8_t* data, size_t len) {
  uint16_t crc = 0xFFFF;
  for (size_t i = 0; i < len; ++i) {
    crc ^= (uint16_t)(data[i] << 8);
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

// ------------------------------------------------------------------ SHA-256 (FIPS 180-4)

typedef struct {
  uint32_t h[8];
  uint64_t bytes;
  uint8_t block[64];
  size_t used;
} edgeae_sha256;

static const uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const uint8_t p[64]) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; ++i) {
    uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + kRound[i] + w[i];
    uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += k;
}

static void sha256_init(edgeae_sha256* s) {
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof(h0));
  s->bytes = 0;
  s->used = 0;
}

static void sha256_update(edgeae_sha256* s, const uint8_t* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    s->block[s->used++] = data[i];
    s->bytes++;
    if (s->used == 64) {
      sha256_block(s->h, s->block);
      s->used = 0;
    }
  }
}

static void sha256_final(edgeae_sha256* s, uint8_t digest[32]) {
  uint64_t bits = s->bytes * 8;
  uint8_t byte = 0x80;
  sha256_update(s, &byte, 1);
  byte = 0;
  while (s->used != 56) sha256_update(s, &byte, 1);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(s, length, 8);
  for (int i = 0; i < 8; ++i) {
    digest[4 * i] = (uint8_t)(s->h[i] >> 24);
    digest[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    digest[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
    digest[4 * i + 3] = (uint8_t)s->h[i];
  }
}

void edgeae_hmac_sha256(const uint8_t* key, size_t key_len, const uint8_t* data, size_t len, uint8_t mac[32]) {
  uint8_t k[64] = {0}, pad[64], inner[32];
  edgeae_sha256 s;
  if (key_len > 64) {  // a long key is hashed first
    sha256_init(&s);
    sha256_update(&s, key, key_len);
    sha256_final(&s, k);
  } else if (key_len > 0) {
    memcpy(k, key, key_len);
  }
  for (int i = 0; i < 64; ++i) pad[i] = k[i] ^ 0x36;
  sha256_init(&s);
  sha256_update(&s, pad, 64);
  sha256_update(&s, data, len);
  sha256_final(&s, inner);
  for (int i = 0; i < 64; ++i) pad[i] = k[i] ^ 0x5c;
  sha256_init(&s);
  sha256_update(&s, pad, 64);
  sha256_update(&s, inner, 32);
  sha256_final(&s, mac);
}

// ------------------------------------------------------------------ the packet

static void put_be(uint8_t* out, uint32_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = (uint8_t)(value >> (8 * (bytes - 1 - i)));
}

size_t edgeae_packet(uint8_t* out, size_t out_size, uint32_t model_id, uint16_t sensor, uint32_t seq, uint32_t timestamp,
                     const int8_t* code, size_t code_size, int residual, const uint8_t* key, size_t key_len) {
  if (code_size < 1 || code_size > EDGEAE_PACKET_MAX_CODE || residual > 255) return 0;
  if ((size_t)EDGEAE_PACKET_SIZE(code_size, residual >= 0, key != NULL) > out_size) return 0;
  out[0] = 1;  // version
  out[1] = (uint8_t)((residual >= 0 ? 0x01 : 0) | (key != NULL ? 0x02 : 0));
  put_be(out + 2, model_id, 4);
  put_be(out + 6, sensor, 2);
  put_be(out + 8, seq, 4);
  put_be(out + 12, timestamp, 4);
  out[16] = (uint8_t)code_size;
  size_t n = 17;
  for (size_t i = 0; i < code_size; ++i) out[n++] = (uint8_t)code[i];
  if (residual >= 0) out[n++] = (uint8_t)residual;
  put_be(out + n, edgeae_crc16(out, n), 2);
  n += 2;
  if (key != NULL) {
    uint8_t mac[32];
    edgeae_hmac_sha256(key, key_len, out, n, mac);
    memcpy(out + n, mac, 4);
    n += 4;
  }
  return n;
}
