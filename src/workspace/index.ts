export { startWorkspace, stopWorkspace, workspaceStatus, listWorkspaces, type StartOptions, type StartResult, type StopResult, type WorkspaceStatus, type WorkspaceOptions } from './workspace.js';
export { openClient, readClientConfig, saveClientLogin, type ClientConfig, type ClientContext } from './client.js';
export { checkSettings, memoryFor, type WorkspaceSettings } from './settings.js';
export { deployVersion, type DeployResult } from './deploy.js';
export { instanceName, imageFolderName, workspaceStore, checkWorkspaceName } from './identity.js';
export { workspaceKeyDir, forgetGrant } from './grant.js';
export { runApplication, exitStatusOf, DEFAULT_AGENT_TIMEOUT_MS, type RunOptions, type RunResult } from './apps.js';
