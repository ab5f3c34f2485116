// i18n.js: the console's words in English and Simplified Chinese. The language
// comes from navigator.language, can be switched in the top bar, and is kept
// in localStorage (the shared translator, /shared/i18n.js, does the rest).

import { translator } from '../shared/i18n.js';

const WORDS = {
  en: {
    email: 'Email', password: 'Password', log_in: 'Log in', forgot_password: 'Forgot your password?', log_out: 'Log out', admin: 'Admin', online: 'Online', away: 'Away', offline: 'Offline',
    queued: 'Waiting', mine: 'Mine', open: 'All open', closed: 'Closed', visitors: 'Visitors', agents: 'Agents',
    take: 'Take', transfer: 'Transfer', close: 'Close', reopen: 'Reopen', block: 'Block', internal_note: 'Internal note',
    attach: 'Attach', send: 'Send', visitor: 'Visitor', earlier: 'Earlier conversations', empty: 'Pick a conversation on the left.',
    to: 'To', note: 'Note', cancel: 'Cancel', block_visitor: 'Block this visitor?', block_ip: 'Also block their IP address',
    shortcuts: 'Keyboard shortcuts', close_help: 'Close', typing: 'typing…', read: 'read', sending: 'sending…',
    status_queued: 'waiting', status_assigned: 'assigned', status_closed: 'closed', load_more: 'Load more',
    no_more: 'No more', chat: 'Chat', returning: 'returning', new_visitor: 'new', user_id: 'User ID', verified: 'verified', unverified: 'unverified (not signed)', page: 'Page', referrer: 'Referrer',
    browser: 'Browser', ip: 'IP', name: 'Name', sessions: 'Sessions', blocked: 'Blocked', yes: 'yes', no: 'no',
    new_conversation: 'New conversation', new_message: 'New message', agent_prefix: 'Agent', team_prefix: 'Team',
    bad_login: 'Wrong email or password.', rate_limited: 'Too many attempts; try again later.',
    k_next: 'Next conversation', k_prev: 'Previous conversation', k_send: 'Send', k_esc: 'Close the pane (the conversation stays open)',
    k_canned: 'Canned replies (at the start of the message)', k_help: 'This help', k_lists: 'Waiting / Mine / All open / Closed / Visitors',
    k_note: 'Toggle internal note', held_by: 'with', you: 'you', upload_failed: 'Upload failed',
  },
  'zh-CN': {
    email: '邮箱', password: '密码', log_in: '登录', forgot_password: '忘记密码？', log_out: '退出', admin: '管理', online: '在线', away: '离开', offline: '离线',
    queued: '排队中', mine: '我的', open: '全部进行中', closed: '已结束', visitors: '访客', agents: '客服',
    take: '接入', transfer: '转接', close: '结束', reopen: '重新打开', block: '拉黑', internal_note: '内部备注',
    attach: '附件', send: '发送', visitor: '访客', earlier: '历史会话', empty: '从左侧选择一个会话。',
    to: '转给', note: '备注', cancel: '取消', block_visitor: '拉黑这位访客？', block_ip: '同时拉黑其 IP 地址',
    shortcuts: '快捷键', close_help: '关闭', typing: '正在输入…', read: '已读', sending: '发送中…',
    status_queued: '排队中', status_assigned: '已接入', status_closed: '已结束', load_more: '加载更多',
    no_more: '没有更多了', chat: '发起对话', returning: '老访客', new_visitor: '新访客', user_id: '用户 ID', verified: '已验证', unverified: '未验证（无签名）', page: '页面', referrer: '来源',
    browser: '浏览器', ip: 'IP', name: '名字', sessions: '访问次数', blocked: '已拉黑', yes: '是', no: '否',
    new_conversation: '新会话', new_message: '新消息', agent_prefix: '客服', team_prefix: '小组',
    bad_login: '邮箱或密码错误。', rate_limited: '尝试次数过多，请稍后再试。',
    k_next: '下一个会话', k_prev: '上一个会话', k_send: '发送', k_esc: '关闭窗格（会话保持进行）',
    k_canned: '快捷回复（在消息开头输入）', k_help: '显示本帮助', k_lists: '排队 / 我的 / 全部 / 已结束 / 访客',
    k_note: '切换内部备注', held_by: '接待人', you: '你', upload_failed: '上传失败',
  },
};

export const { t, locale, setLocale, apply } = translator(WORDS, { storageKey: 'kefu.console.language' });
