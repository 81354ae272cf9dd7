#!/usr/bin/env node
// `npx opsledger …`: run the TypeScript CLI through tsx (no build step).
import { register } from 'tsx/esm/api';
register();
await import('./cli.ts');
