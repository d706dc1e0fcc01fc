#!/usr/bin/env node
// The `mdt` executable: the sources are TypeScript, run through tsx's loader registered here.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
