// i18n.js: the visitor panel's user-facing strings in English and Simplified
// Chinese. The locale comes from navigator.language unless the host page
// overrides it with kefu.setLocale(); t() looks a key up and fills {names}.

const STRINGS = {
  en: {
    title: 'Chat with us',
    close: 'Close',
    settings: 'Settings',
    sound: 'Sound on new replies',
    titleBlink: 'Blink the tab title',
    connecting: 'Connecting…',
    online: 'Online',
    reconnecting: 'Offline, reconnecting…',
    noAgents: 'No agent is available right now. Leave us a message and we will reply by email.',
    placeholder: 'Type a message…',
    send: 'Send',
    emoji: 'Emoji',
    attach: 'Send an image or file',
    attachNeedsChat: 'Send a message first, then you can attach files.',
    uploading: 'Uploading {name}…',
    uploadFailed: 'Upload failed: {reason}',
    loadOlder: 'Loading earlier messages…',
    typing: '{name} is typing…',
    agent: 'Agent',
    bot: 'Bot',
    you: 'You',
    sending: 'Sending',
    sent: 'Sent',
    read: 'Read',
    failed: 'Not sent: {reason}',
    name: 'Name',
    email: 'Email',
    message: 'Message',
    question: 'How can we help?',
    startChat: 'Start chat',
    prechatIntro: 'Tell us who you are and we will be right with you.',
    sendOffline: 'Send message',
    offlineThanks: 'Thanks! We got your message and will reply by email.',
    closedNote: 'This conversation was closed.',
    ratePrompt: 'How did we do?',
    rateComment: 'Anything to add? (optional)',
    rateSubmit: 'Send rating',
    rateThanks: 'Thank you for your feedback!',
    star: '{n} of 5 stars',
    invalidSignature: 'We could not verify your identity (the signature is invalid), so this chat cannot start. Please sign in again or contact the site.',
    originNotAllowed: 'Chat is not enabled on this website.',
    blocked: 'This chat is not available.',
    unknownSite: 'This chat link is not valid.',
    requestFailed: 'Something went wrong: {reason}',
    newMessage: '💬 New message',
    download: 'Download',
  },
  'zh-CN': {
    title: '在线客服',
    close: '关闭',
    settings: '设置',
    sound: '新回复时播放提示音',
    titleBlink: '标签页标题闪烁提醒',
    connecting: '正在连接…',
    online: '在线',
    reconnecting: '网络已断开，正在重连…',
    noAgents: '当前没有客服在线。请留言，我们会通过邮件回复您。',
    placeholder: '请输入消息…',
    send: '发送',
    emoji: '表情',
    attach: '发送图片或文件',
    attachNeedsChat: '请先发送一条消息，然后即可发送文件。',
    uploading: '正在上传 {name}…',
    uploadFailed: '上传失败：{reason}',
    loadOlder: '正在加载更早的消息…',
    typing: '{name} 正在输入…',
    agent: '客服',
    bot: '机器人',
    you: '我',
    sending: '发送中',
    sent: '已发送',
    read: '已读',
    failed: '未发送：{reason}',
    name: '姓名',
    email: '邮箱',
    message: '留言',
    question: '请问有什么可以帮您？',
    startChat: '开始咨询',
    prechatIntro: '请留下您的信息，客服马上为您服务。',
    sendOffline: '提交留言',
    offlineThanks: '谢谢！我们已收到您的留言，会通过邮件回复您。',
    closedNote: '本次会话已结束。',
    ratePrompt: '请为本次服务评分',
    rateComment: '其他意见（可选）',
    rateSubmit: '提交评价',
    rateThanks: '感谢您的评价！',
    star: '{n} 星（满分 5 星）',
    invalidSignature: '无法验证您的身份（签名无效），无法开始会话。请重新登录或联系网站。',
    originNotAllowed: '本网站未开通在线客服。',
    blocked: '暂时无法使用在线客服。',
    unknownSite: '此客服链接无效。',
    requestFailed: '出错了：{reason}',
    newMessage: '💬 新消息',
    download: '下载',
  },
};

let current = pickLocale(navigator.language);

/** Maps any browser or caller locale tag onto one of the supported locales. */
export function pickLocale(tag) {
  return /^zh/i.test(String(tag || '')) ? 'zh-CN' : 'en';
}

/** Switches the locale; returns the one now in force. */
export function setLocale(tag) {
  current = pickLocale(tag);
  return current;
}

export function locale() {
  return current;
}

/** The string for `key` in the current locale, with {name} placeholders filled from `vars`. */
export function t(key, vars) {
  const s = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
}
