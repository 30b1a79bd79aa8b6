/**
 * Structured JSON logs through pino. Only ids, counts and reasons are ever logged — never
 * payloads: the relay has no plaintext, and it logs no ciphertext either.
 */
import pino from 'pino'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

export function createLogger(level: LogLevel = 'info', write?: (line: string) => void, bindings: Record<string, unknown> = {}): Logger {
  const destination = write ? { write } : pino.destination({ sync: false })
  const log = pino({ level, base: { service: 'petrel-relay', ...bindings } }, destination)
  return {
    debug: (msg, fields) => log.debug(fields ?? {}, msg),
    info: (msg, fields) => log.info(fields ?? {}, msg),
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
    error: (msg, fields) => log.error(fields ?? {}, msg),
  }
}
