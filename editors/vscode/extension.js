// The VS Code side of nudge: starts `nudge lsp` and hands it the rule files.
// Everything the editor shows (diagnostics, completion, hover, definitions,
// formatting, quick fixes) comes from the server.

const { workspace } = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

let client;

function activate() {
  const command = workspace.getConfiguration('nudge').get('path') || 'nudge';
  const serverOptions = { command, args: ['lsp'] };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'nudge' },
      // A new buffer never saved, set to the nudge language.
      { scheme: 'untitled', language: 'nudge' },
      // YAML rule files live in the rules folder; the config is checked too.
      { scheme: 'file', language: 'yaml', pattern: '**/rules/**/*.{yaml,yml}' },
      { scheme: 'file', language: 'yaml', pattern: '**/nudge.yaml' },
    ],
    synchronize: {
      // Saved changes to files that are not open (a plugin, the config) reload the project.
      fileEvents: workspace.createFileSystemWatcher('**/{nudge.yaml,*.rules,*.rhai,*.yaml,*.yml}'),
    },
  };
  client = new LanguageClient('nudge', 'nudge', serverOptions, clientOptions);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
