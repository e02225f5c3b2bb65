#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

const code = await main(process.argv.slice(2));
// Exit explicitly (client libraries keep sockets open), after stdout has drained.
process.stdout.write('', () => process.exit(code));
