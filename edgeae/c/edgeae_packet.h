// edgeae's packet, wire format v1 (docs/wire-format.md of edgeae), for the device's firmware: the
// bytes `edgeae serve` takes for one window. Plain C99, no dependencies (CRC-16 and HMAC-SHA256
// included); compiles as C++ too. Copied unchanged into every export made with --target mcu.
// No heap and no static state; about 2.2 kB of code and 0.7 kB of stack at most (a tagged packet;
// gcc -Os -fstack-usage on x86-64).
#ifndef EDGEAE_PACKET_H_
#define EDGEAE_PACKET_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEAE_PACKET_MAX_CODE 64
#define EDGEAE_PACKET_NO_RESIDUAL (-1)
// header 17, code, residual 1, CRC 2, tag 4
#define EDGEAE_PACKET_SIZE(code_size, residual, tagged) (17 + (code_size) + ((residual) ? 1 : 0) + 2 + ((tagged) ? 4 : 0))
#define EDGEAE_PACKET_MAX_SIZE EDGEAE_PACKET_SIZE(EDGEAE_PACKET_MAX_CODE, 1, 1)

// Write one window's packet into `out` and return its length: 0 when `out_size` is too small,
// `code_size` is not 1..64 or `residual` is over 255 (nothing is written then).
// model_id: the export's (EDGEAE_<NAME>_MODEL_ID in <name>_model_id.h). seq: +1 per window, kept
// across resets in non-volatile memory (the host rejects a number it has stored as a replay).
// timestamp: Unix seconds of the window's last sample, or 0 on a device without a clock (the host
// then stamps the packet with the time it was received). residual: the device model's residual
// byte, or EDGEAE_PACKET_NO_RESIDUAL. key: the sensor's key (the host's keys file), or NULL for
// an untagged packet.
size_t edgeae_packet(uint8_t* out, size_t out_size, uint32_t model_id, uint16_t sensor, uint32_t seq, uint32_t timestamp,
                     const int8_t* code, size_t code_size, int residual, const uint8_t* key, size_t key_len);

// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).
uint16_t edgeae_crc16(const uint8_t* data, size_t len);

// HMAC-SHA256 (RFC 2104, FIPS 180-4).
void edgeae_hmac_sha256(const uint8_t* key, size_t key_len, const uint8_t* data, size_t len, uint8_t mac[32]);

#ifdef __cplusplus
}
#endif

#endif  // EDGEAE_PACKET_H_
