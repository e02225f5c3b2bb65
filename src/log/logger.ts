// JSON lines by default (pino); `pretty` for terminals.
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import { redactOutput } from './redact.js';

export type { Logger } from 'pino';
export type LogFormat = 'json' | 'pretty';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Logs go to stdout (fd 1) unless stdout carries output of its own (`render --dry`: fd 2). */
export function createLogger(format: LogFormat = 'json', level: LogLevel = 'info', fd: 1 | 2 = 1): Logger {
  // Every line passes through redactOutput() (masked inside its strings, so it stays JSON): no credential is ever written, whatever a library's error echoes.
  const base = { level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime, hooks: { streamWrite: redactOutput } };
  const tty = (fd === 1 ? process.stdout : process.stderr).isTTY;
  if (format === 'pretty') return pino(base, pretty({ destination: fd, colorize: tty, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', hideObject: true, sync: true }));
  return pino(base, pino.destination({ fd, sync: true }));
}

/** A logger that drops everything: for library use and unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
