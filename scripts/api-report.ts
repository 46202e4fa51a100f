// The public API report: every name the package's entry points export, with its type, as a
// reviewed file (services/authz/api-report.md) so that a change to the API shows in review.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { PACKAGE_ROOT } from '../services/authz/package-root.ts';

/** The package's entry points (package.json "exports") and the sources they are compiled from. */
export const ENTRY_POINTS: ReadonlyArray<{ specifier: string; source: string }> = [
  { specifier: 'twokey', source: 'services/authz/index.ts' },
  { specifier: 'twokey/ca', source: 'certs-ca/index.ts' },
  { specifier: 'twokey/testing', source: 'services/authz/testing/index.ts' },
];

export const REPORT_PATH = join(PACKAGE_ROOT, 'services', 'authz', 'api-report.md');
export const REGENERATE = 'npm run api-report';

const FLAGS = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseSingleQuotesForStringLiteralType | ts.TypeFormatFlags.WriteArrowStyleSignature;

function program(): ts.Program {
  const config = ts.getParsedCommandLineOfConfigFile(join(PACKAGE_ROOT, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n')); } });
  if (config === undefined) throw new Error('cannot read tsconfig.json');
  return ts.createProgram(ENTRY_POINTS.map((e) => join(PACKAGE_ROOT, e.source)), { ...config.options, noEmit: true });
}

function isHidden(member: ts.Symbol): boolean {
  if (member.name.startsWith('__#') || member.name.startsWith('#') || member.name === 'prototype') return true;
  return (member.declarations ?? []).some((d) => (ts.getCombinedModifierFlags(d as ts.Declaration) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) !== 0);
}

function memberLines(checker: ts.TypeChecker, type: ts.Type, at: ts.Node, prefix: string): string[] {
  const lines: string[] = [];
  for (const member of checker.getPropertiesOfType(type)) {
    if (isHidden(member)) continue;
    const decl = member.declarations?.[0];
    const readonly = decl !== undefined && (ts.getCombinedModifierFlags(decl as ts.Declaration) & ts.ModifierFlags.Readonly) !== 0 ? 'readonly ' : '';
    const optional = (member.flags & ts.SymbolFlags.Optional) !== 0 ? '?' : '';
    const memberType = checker.getTypeOfSymbolAtLocation(member, decl ?? at);
    const isMethod = (member.flags & ts.SymbolFlags.Method) !== 0;
    if (isMethod) {
      for (const sig of memberType.getCallSignatures()) lines.push(`  ${prefix}${member.name}${optional}${checker.signatureToString(sig, undefined, FLAGS)}`);
    } else {
      const isAccessor = (member.flags & ts.SymbolFlags.GetAccessor) !== 0 && (member.flags & ts.SymbolFlags.SetAccessor) === 0;
      lines.push(`  ${prefix}${isAccessor ? 'get ' : readonly}${member.name}${optional}: ${checker.typeToString(memberType, undefined, FLAGS)}`);
    }
  }
  return lines;
}

function describeExport(checker: ts.TypeChecker, exported: ts.Symbol): string[] {
  const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
  const decl = symbol.declarations?.[0];
  if (decl === undefined) return [`unknown ${exported.name}`];
  const name = exported.name;
  if (symbol.flags & ts.SymbolFlags.Class) {
    const statics = memberLines(checker, checker.getTypeOfSymbolAtLocation(symbol, decl), decl, 'static ');
    const instance = memberLines(checker, checker.getDeclaredTypeOfSymbol(symbol), decl, '');
    // A private constructor means instances come only from the static factories listed.
    const privateConstructor = (decl as ts.ClassDeclaration).members.some((m) => ts.isConstructorDeclaration(m) && (ts.getCombinedModifierFlags(m) & ts.ModifierFlags.Private) !== 0);
    const constructors = privateConstructor ? [] : checker.getTypeOfSymbolAtLocation(symbol, decl).getConstructSignatures();
    const ctorLines = constructors.map((sig) => `  constructor${checker.signatureToString(sig, undefined, FLAGS).replace(/ => .*$/, '')}`);
    return [`class ${name}`, ...ctorLines, ...statics, ...instance];
  }
  if (symbol.flags & ts.SymbolFlags.Interface) {
    return [`interface ${name}`, ...memberLines(checker, checker.getDeclaredTypeOfSymbol(symbol), decl, '')];
  }
  if (symbol.flags & ts.SymbolFlags.TypeAlias) {
    return [`type ${name} = ${checker.typeToString(checker.getDeclaredTypeOfSymbol(symbol), undefined, FLAGS | ts.TypeFormatFlags.InTypeAlias)}`];
  }
  if (symbol.flags & ts.SymbolFlags.Function) {
    return checker.getTypeOfSymbolAtLocation(symbol, decl).getCallSignatures().map((sig) => `function ${name}${checker.signatureToString(sig, undefined, FLAGS)}`);
  }
  if (symbol.flags & ts.SymbolFlags.Variable) {
    return [`const ${name}: ${checker.typeToString(checker.getTypeOfSymbolAtLocation(symbol, decl), undefined, FLAGS)}`];
  }
  return [`unknown ${name}`];
}

/** The report text: per entry point, each exported name and its type, sorted by name. */
export function apiReport(): string {
  const prog = program();
  const checker = prog.getTypeChecker();
  const out = [
    '# twokey public API',
    '',
    `Generated by \`${REGENERATE}\` from the entry points in package.json "exports"; do not edit.`,
    'A change here is a change to what other teams build on: review it as one.',
  ];
  for (const entry of ENTRY_POINTS) {
    const file = prog.getSourceFile(join(PACKAGE_ROOT, entry.source));
    const moduleSymbol = file === undefined ? undefined : checker.getSymbolAtLocation(file);
    if (moduleSymbol === undefined) throw new Error(`${entry.source} is not a module`);
    out.push('', `## ${entry.specifier}`, '', `Source: \`${entry.source}\``, '', '```ts');
    const exports = checker.getExportsOfModule(moduleSymbol).sort((a, b) => a.name.localeCompare(b.name));
    out.push(exports.map((e) => describeExport(checker, e).join('\n')).join('\n\n'));
    out.push('```');
  }
  return `${out.join('\n')}\n`;
}

/** Every source file the entry points load, relative to the package root (node_modules excluded). */
export function entryPointSources(): string[] {
  return program()
    .getSourceFiles()
    .map((f) => relative(PACKAGE_ROOT, f.fileName))
    .filter((f) => !f.startsWith('..') && !f.split('/').includes('node_modules'))
    .sort();
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) {
  const report = apiReport();
  if (process.argv.includes('--write')) {
    writeFileSync(REPORT_PATH, report);
    process.stdout.write(`wrote ${relative(process.cwd(), REPORT_PATH)}\n`);
  } else {
    const current = readFileSync(REPORT_PATH, 'utf8');
    process.stdout.write(current === report ? 'API report is current\n' : `API report is stale: run ${REGENERATE}\n`);
    process.exitCode = current === report ? 0 : 1;
  }
}
