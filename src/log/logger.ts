// JSON lines by default (pino); `pretty` for terminals.
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';
export type LogFormat = 'json' | 'pretty';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(format: LogFormat = 'json', level: LogLevel = 'info'): Logger {
  const base = { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime };
  if (format === 'pretty') return pino(base, pretty({ colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', hideObject: true, sync: true }));
  return pino(base, pino.destination({ fd: 1, sync: true }));
}

/** A logger that drops everything: for library use and unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
