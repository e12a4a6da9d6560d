'use strict';
// The package through `require` and through `import` is one package: the same classes, so
// instanceof holds across both, and package.json's exports point at files that exist.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');

test('require and import give the same objects', async () => {
  const required = require('..');
  const imported = await import('../index.mjs');
  assert.equal(typeof required.Client, 'function');
  for (const name of Object.keys(required)) {
    assert.equal(imported[name], required[name], name);
  }
  assert.equal(imported.default, required);
  const error = new required.ForbiddenError('Invalid secret', { status: 403 });
  assert.ok(error instanceof imported.AuthError);
});

test("package.json's exports, types and files exist", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const targets = [pkg.main, pkg.types, pkg.module];
  for (const condition of Object.values(pkg.exports['.'])) targets.push(condition.types, condition.default);
  for (const target of targets) assert.ok(fs.existsSync(path.join(ROOT, target)), target);
  for (const file of pkg.files) assert.ok(fs.existsSync(path.join(ROOT, file)), file);
  const declared = fs.readFileSync(path.join(ROOT, 'index.d.cts'), 'utf8');
  for (const name of Object.keys(require('..'))) {
    assert.match(declared, new RegExp(`export declare (class|const|function) ${name}\\b`), `${name} has no type`);
  }
});
