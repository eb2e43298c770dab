/**
 * The JSON Schema of a workspace policy (draft-07). docs/policy.schema.json is this object,
 * written out (test/server/policy.test.ts checks they are equal); docs/policy.md explains it.
 * The name patterns are ./names.ts's rules (the ones the server and the client apply).
 */
import { APP_NAME_PATTERN, IMAGE_NAME_PATTERN, PRINCIPAL_NAME_PATTERN, WORKSPACE_NAME_PATTERN } from './names.js';

const NAME = { type: 'string', pattern: PRINCIPAL_NAME_PATTERN };
const WORKSPACE = { type: 'string', pattern: WORKSPACE_NAME_PATTERN };
const IMAGE = { type: 'string', pattern: IMAGE_NAME_PATTERN };

export const POLICY_SCHEMA = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'urn:medv:policy:1',
  title: 'medv workspace policy',
  description: 'What an administrator publishes with `medv admin policy publish`: workspaces, who may run them, and how.',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'workspaces'],
  properties: {
    $schema: { type: 'string', maxLength: 256 },
    name: { ...NAME, description: 'Policy name; each publish of a name makes its next version.' },
    description: { type: 'string', maxLength: 1024 },
    users: { type: 'array', maxItems: 1000, uniqueItems: true, items: NAME, description: 'Users entitled to the workspaces.' },
    groups: { type: 'array', maxItems: 1000, uniqueItems: true, items: NAME, description: 'Groups whose members are entitled.' },
    workspaces: { type: 'array', minItems: 1, maxItems: 32, items: { $ref: '#/definitions/workspace' } },
  },
  definitions: {
    workspace: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'image'],
      properties: {
        name: { ...WORKSPACE, description: 'What users start: `medv workspace start NAME`; also its VM\'s name, so no \'@\'.' },
        image: { ...IMAGE, description: 'Image name in the repository (<image>_<N>.ckm); the newest version runs.' },
        mode: { type: 'string', enum: ['persistent', 'revertible'], default: 'persistent', description: 'revertible: the guest\'s writes are discarded at every stop.' },
        onStop: { type: 'string', enum: ['shutdown', 'suspend'], default: 'shutdown', description: 'suspend keeps the running state (encrypted) for the next start.' },
        memory: {
          description: 'Guest RAM: a fixed number of MiB, or a table by host RAM (the row with the largest hostMiB not above the host\'s RAM applies).',
          oneOf: [
            { type: 'integer', minimum: 64, maximum: 1048576 },
            {
              type: 'object',
              additionalProperties: false,
              required: ['byHostRam'],
              properties: {
                byHostRam: {
                  type: 'array', minItems: 1, maxItems: 16,
                  items: {
                    type: 'object', additionalProperties: false, required: ['hostMiB', 'guestMiB'],
                    properties: {
                      hostMiB: { type: 'integer', minimum: 0, maximum: 16777216 },
                      guestMiB: { type: 'integer', minimum: 64, maximum: 1048576 },
                    },
                  },
                },
              },
            },
          ],
        },
        network: { type: 'string', enum: ['nat', 'none'], default: 'nat' },
        devices: {
          type: 'object',
          additionalProperties: false,
          description: 'Host devices the guest may use; absent means not allowed, and a device not allowed is not in the VM at all.',
          properties: {
            usb: { type: 'boolean', description: 'USB redirection of the devices in usbDevices (nothing else).' },
            usbDevices: {
              type: 'array', maxItems: 16, uniqueItems: true,
              description: 'The USB devices the guest gets when usb is true, as vendor:product (4 hex digits each, as lsusb shows them).',
              items: { type: 'string', pattern: '^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}$' },
            },
            cdrom: { type: 'boolean' },
            clipboard: { type: 'boolean', description: 'The clipboard shared with the VM\'s window (QEMU\'s qemu-vdagent; the guest needs spice-vdagent).' },
            sharedFolders: { type: 'boolean', description: 'Host folders the user names (medv workspace start --share TAG=DIR) are shared with the guest (virtio-9p), read-only.' },
            sharedFoldersWritable: { type: 'boolean', description: 'With sharedFolders: the guest may also write into them.' },
          },
        },
        versionsToKeep: { type: 'integer', minimum: 0, maximum: 16, default: 1, description: 'Older versions kept on the client besides the newest.' },
        suggestUpdate: { type: 'boolean', default: true, description: 'true: ask the user when a new version is published; false: update at the next start.' },
        useTrimTransfer: { type: 'boolean', default: true, description: 'Fetch only the blocks the client lacks (else download whole packs).' },
        mirrors: {
          type: 'array', maxItems: 8, uniqueItems: true,
          description: 'Base URLs of static copies of the image\'s packs (a branch web server, a CDN, an object store\'s public URL), tried in order before the server; every block is checked against the server\'s signed index, so a mirror needs no trust. http(s), no credentials, query or fragment.',
          items: { type: 'string', maxLength: 1024, pattern: '^https?://[^/@\\s?#]+(/[^\\s?#]*)?$' },
        },
        offlineDays: { type: 'integer', minimum: 0, maximum: 3650, default: 0, description: 'Days the workspace may start without reaching the server.' },
        expires: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$', description: 'Last day (UTC, YYYY-MM-DD) the workspace may start.' },
        hardware: {
          type: 'object',
          additionalProperties: false,
          description: 'Virtual hardware for the guest\'s drivers: ide and e1000 (default) suit most guests, virtio is faster where the guest has drivers.',
          properties: {
            diskBus: { type: 'string', enum: ['ide', 'virtio'], default: 'ide' },
            nic: { type: 'string', enum: ['e1000', 'virtio'], default: 'e1000' },
          },
        },
        minEngine: { type: 'string', pattern: '^[0-9]{1,5}(\\.[0-9]{1,5}){0,3}$', default: '1.0', description: 'Oldest medv engine (VirtualizationEngine) that may run the image; an older client refuses to start it.' },
        applications: {
          type: 'array', maxItems: 64,
          description: 'Published applications: each gets a menu entry that runs `medv workspace run WORKSPACE NAME`, which starts the workspace if needed and runs `argv` in the guest through its QEMU guest agent (the VM then has the agent\'s port).',
          items: {
            type: 'object', additionalProperties: false, required: ['name', 'argv'],
            properties: {
              name: { type: 'string', pattern: APP_NAME_PATTERN, description: 'What `medv workspace run WORKSPACE NAME` names (the workspace name rules).' },
              title: { type: 'string', minLength: 1, maxLength: 128, description: 'The menu label (default: name).' },
              argv: {
                type: 'array', minItems: 1, maxItems: 64,
                description: 'The program and its arguments, run in the guest as given: no shell (name one, e.g. ["sh", "-c", "..."], to get one). argv[0] is looked up on the guest agent\'s PATH.',
                items: { type: 'string', maxLength: 1024, pattern: '^[^\\u0000]*$' },
              },
              icon: { type: 'string', maxLength: 256, description: 'Icon name or path, for the .desktop file.' },
            },
          },
        },
      },
    },
  },
} as const;
