// A template file compiled once and rendered per change. Every problem is reported as
// `file:line: message`, from Handlebars' parse errors, its compiler's located exceptions and
// the helpers' own errors.
import { readFile } from 'node:fs/promises';
import { createHandlebars, type HandlebarsInstance, TemplateError } from './helpers.js';

export interface CompiledTemplate {
  readonly file: string;
  render(data: unknown): string;
}

const OPTIONS = { noEscape: true } as const;

/** `file:line: message` (or `file: message` when no line is known). */
export function templateErrorLine(file: string, err: unknown): string {
  const e = err as Error & { lineNumber?: number; line?: number };
  let line = err instanceof TemplateError ? err.line : e.lineNumber;
  let message = String(e?.message ?? err);
  const parse = /^Parse error on line (\d+):\n([\s\S]*)$/.exec(message);
  if (parse) {
    line = Number(parse[1]);
    const rest = parse[2].split('\n');
    const got = /got '([^']+)'/.exec(rest[rest.length - 1]);
    message = `parse error near "${rest[0].trim().slice(-40)}"${got ? `: unexpected ${got[1]}` : ''}`;
  } else {
    message = message.replace(/ - \d+:\d+$/, '');
  }
  message = message.split('\n')[0].slice(0, 300);
  return line ? `${file}:${line}: ${message}` : `${file}: ${message}`;
}

/** Compile template text; syntax errors are found now, not at the first render. */
export function compileTemplate(file: string, text: string, hb: HandlebarsInstance = createHandlebars()): CompiledTemplate {
  try {
    hb.precompile(text, OPTIONS);
  } catch (err) {
    throw new Error(templateErrorLine(file, err));
  }
  const fn = hb.compile(text, OPTIONS);
  return {
    file,
    render(data: unknown): string {
      try {
        return fn(data);
      } catch (err) {
        throw new Error(templateErrorLine(file, err));
      }
    },
  };
}

export async function loadTemplate(file: string, hb?: HandlebarsInstance): Promise<CompiledTemplate> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read template: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return compileTemplate(file, text, hb);
}
